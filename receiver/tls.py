"""The TLS context carriers connect to: TLS 1.2 or newer, AEAD ciphers, forward secrecy."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["server_context"]

# TLS 1.2 suites: ECDHE key exchange (no static RSA) and AEAD only (no CBC).
# TLS 1.3 suites are all AEAD with ephemeral key exchange already.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` (full chain, PEM) and ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.load_cert_chain(str(cert), str(key))
    return context
