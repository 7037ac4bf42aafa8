"""A development certificate for localhost, made once in the state directory.

A small local CA signs it, so clients verify it with ``--cacert <state>/tls/ca.pem``
instead of turning verification off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DevCertificate", "ensure_certificate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DevCertificate:
    """Paths of the server chain, its key and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_folder(cls, folder: Path) -> DevCertificate:
        """Where :func:`ensure_certificate` keeps them in ``folder`` (made or not yet)."""
        return cls(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")


def ensure_certificate(folder: Path) -> DevCertificate:
    """Create the certificate for localhost, 127.0.0.1 and ::1 unless it exists."""
    paths = DevCertificate.in_folder(folder)
    if all(path.is_file() for path in (paths.cert, paths.key, paths.ca)):
        return paths
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="smsrx development CA")
    issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
    issued.private_key_and_cert_chain_pem.write_to_path(str(paths.cert))
    issued.private_key_pem.write_to_path(str(paths.key))
    paths.key.chmod(0o600)
    ca.cert_pem.write_to_path(str(paths.ca))
    logger.info("development certificate created in %s", folder)
    return paths
