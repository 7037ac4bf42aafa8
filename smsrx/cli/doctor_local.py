"""``smsrx doctor``'s checks of this machine: the certificate, the allowlists and the spool.

Each is a function of the settings (and of the clock or ``/proc/locks`` it is given)
that returns :class:`~smsrx.cli.doctor_check.Check` items; none talks to a service.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from smsrx.cli.doctor_check import Check, failed, passed, warned
from smsrx.settings import ORANGE_SOURCE_ADDRESSES, Network, Settings

__all__ = [
    "EXPIRY_WARNING",
    "Holders",
    "allowlists",
    "certificate",
    "flock_holders",
    "read_flock_holders",
    "spool",
]

EXPIRY_WARNING = timedelta(days=30)
"""A certificate closer than this to its end is a warning."""

_NOT_LOADED = (
    "give SMSRX_TLS_CERT the PEM chain (server certificate first) and SMSRX_TLS_KEY its "
    "unencrypted PEM private key"
)


# -- certificate -------------------------------------------------------------------------


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read, or None."""
    try:
        with path.open("rb"):
            return None
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "a directory, not a file"
    except PermissionError:
        return f"not readable by this user (uid {os.getuid()})"
    except OSError as exc:
        return exc.strerror or str(exc)


def _load(cert: Path, key: Path) -> str | None:
    """Why the receiver could not load this pair, or None."""
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
        asked.append(True)
        return b""

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if asked:
            return "the key is encrypted with a passphrase, and the receiver takes none"
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key (SMSRX_TLS_KEY) does not match the certificate"
        return f"cannot load them: {exc.reason or exc}"
    return None


def _decode(cert: Path) -> dict[str, Any]:
    """The first certificate of ``cert`` as :meth:`ssl.SSLSocket.getpeercert` shows it.

    The standard library decodes certificates only through this helper (its own tests
    use it); smsrx's runtime has no ``cryptography`` to do it otherwise.
    """
    import _ssl

    return cast(dict[str, Any], _ssl._test_decode_cert(str(cert)))  # type: ignore[attr-defined]


def _names(fields: Mapping[str, Any]) -> str:
    """The names a certificate is for: its subjectAltName entries, else its CN."""
    names = [str(value) for _kind, value in fields.get("subjectAltName", ())]
    if not names:
        names = [
            str(value)
            for rdn in fields.get("subject", ())
            for kind, value in rdn
            if kind == "commonName"
        ]
    return ", ".join(names) or "no names"


def _moment(text: str) -> datetime:
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


def certificate(settings: Settings, now: datetime) -> Check:
    """SMSRX_TLS_CERT/KEY: readable, a matching pair, valid at ``now``, days left."""
    name = "certificate"
    if settings.insecure_http:
        return warned(
            name,
            "SMSRX_INSECURE_HTTP=1: the receiver serves plain HTTP and uses no certificate",
            "keep it only behind a proxy that terminates TLS; otherwise set SMSRX_TLS_CERT, "
            "SMSRX_TLS_KEY and SMSRX_INSECURE_HTTP=0",
        )
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return failed(
            name,
            "SMSRX_TLS_CERT and SMSRX_TLS_KEY are not set: the receiver will not start",
            f"{_NOT_LOADED}; or set SMSRX_INSECURE_HTTP=1 behind a proxy that terminates TLS",
        )
    for variable, path in (("SMSRX_TLS_CERT", cert), ("SMSRX_TLS_KEY", key)):
        if problem := _unreadable(path):
            return failed(
                name, f"{variable}={path}: {problem}", f"point {variable} at a readable file"
            )
    if problem := _load(cert, key):
        return failed(name, f"{cert}: {problem}", _NOT_LOADED)
    try:
        fields = _decode(cert)
        not_before, not_after = _moment(fields["notBefore"]), _moment(fields["notAfter"])
    except (AttributeError, ImportError, KeyError, ValueError, ssl.SSLError) as exc:
        return warned(name, f"{cert}: key matches, but its dates cannot be read here ({exc!r})")
    left = not_after - now
    days = math.floor(left / timedelta(days=1))
    until = f"until {not_after:%Y-%m-%d %H:%M} UTC"
    found = f"{cert}: for {_names(fields)}, key matches"
    renew = "renew it; the receiver reads it at start, so restart the receiver afterwards"
    if now < not_before:
        return failed(
            name,
            f"{found}, but not valid before {not_before:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or use a certificate that is valid now",
        )
    if left <= timedelta(0):
        ago = math.floor(-left / timedelta(days=1))
        return failed(
            name,
            f"{found}, but it expired on {not_after:%Y-%m-%d %H:%M} UTC, {ago} day(s) ago",
            renew,
        )
    if left < EXPIRY_WARNING:
        return warned(name, f"{found}, valid {until}: expires in {days} day(s)", renew)
    return passed(name, f"{found}, valid {until} ({days} days left)")


# -- allowlists --------------------------------------------------------------------------


def _shown(networks: Sequence[Network]) -> str:
    """CIDRs as configured, a single address without its /32 or /128."""
    return ", ".join(
        str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        for net in networks
    )


def _everyone(networks: Sequence[Network]) -> list[Network]:
    return [net for net in networks if net.prefixlen == 0]


def _covered(address: str, networks: Sequence[Network]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


def _provider(
    name: str, variable: str, provider: str, networks: Sequence[Network], documented: Sequence[str]
) -> Check:
    if not networks:
        return warned(
            name,
            f"none: every {provider} callback is refused (403)",
            f"set {variable} to {provider}'s source addresses (comma-separated CIDRs)",
        )
    if everyone := _everyone(networks):
        return warned(
            name,
            f"{_shown(networks)}: any address may post {provider} callbacks ({_shown(everyone)})",
            f"list only {provider}'s source addresses in {variable}",
        )
    missing = [address for address in documented if not _covered(address, networks)]
    if missing:
        return warned(
            name,
            f"{_shown(networks)}: {provider}'s documented source address(es) "
            f"{', '.join(missing)} are not in it, so their callbacks are refused (403)",
            f"add {', '.join(missing)} to {variable}",
        )
    return passed(name, _shown(networks))


def allowlists(settings: Settings) -> list[Check]:
    """Who may post each provider's callbacks, and whose X-Forwarded-For is believed."""
    checks = [
        _provider(
            "allowlist orange",
            "SMSRX_ALLOW_ORANGE",
            "Orange",
            settings.allow_orange,
            ORANGE_SOURCE_ADDRESSES,
        ),
        _provider(
            "allowlist vavasms", "SMSRX_ALLOW_VAVASMS", "VavaSMS", settings.allow_vavasms, ()
        ),
    ]
    proxies = settings.trusted_proxies
    name = "trusted proxies"
    if not proxies:
        checks.append(passed(name, "none: X-Forwarded-For is ignored, the client is the TCP peer"))
    elif everyone := _everyone(proxies):
        checks.append(
            warned(
                name,
                f"{_shown(proxies)}: every peer's X-Forwarded-For is believed "
                f"({_shown(everyone)}), so any client can claim an allowed address",
                "list only your proxies' addresses in SMSRX_TRUSTED_PROXIES",
            )
        )
    else:
        checks.append(passed(name, f"{_shown(proxies)}: X-Forwarded-For is read from these peers"))
    return checks


# -- spool -------------------------------------------------------------------------------

Holders = Mapping[int, Sequence[tuple[int, int]]]
"""Inode → (device, pid) of each flock held on it, from ``/proc/locks``."""


def read_flock_holders() -> Holders | None:
    """The flocks held on this machine; None where there is no ``/proc/locks``."""
    try:
        return flock_holders(Path("/proc/locks").read_text())
    except OSError:
        return None


def flock_holders(text: str) -> dict[int, list[tuple[int, int]]]:
    """The flocks held, from the text of ``/proc/locks`` (Linux)."""
    holders: dict[int, list[tuple[int, int]]] = {}
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2155519 0 EOF"; "1: -> FLOCK ..." waits.
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            device = os.makedev(int(major, 16), int(minor, 16))
            holders.setdefault(int(inode), []).append((device, int(fields[4])))
    return holders


def _holder(lock: Path, holders: Holders) -> int | None:
    """The pid holding ``lock``; on an overlay filesystem the device may differ, so an
    inode held on another device counts too."""
    try:
        stat = lock.stat()
    except OSError:
        return None
    found = holders.get(stat.st_ino, ())
    exact = [pid for device, pid in found if device == stat.st_dev]
    pids = exact or [pid for _device, pid in found]
    return pids[0] if pids else None


def _bytes(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} GiB"


def _size(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _locks(directory: Path, holders: Holders | None) -> str:
    """Which receiver processes hold the spools in ``directory``."""
    if holders is None:
        return "lock state unknown here (no /proc/locks)"
    locks = sorted([directory / "lock", *directory.glob("worker-*/lock")])
    held = [
        f"{lock.parent.name} by pid {pid}"
        for lock in locks
        if (pid := _holder(lock, holders)) is not None
    ]
    if held:
        return f"locked by a running receiver ({', '.join(held)})"
    return "not locked: no receiver is running on it"


def spool(settings: Settings, holders: Holders | None) -> Check:
    """SMSRX_SPOOL_DIR: size on disk, held by a receiver or not, free space beside it."""
    name = "spool"
    directory, limit = settings.spool_dir, settings.spool_max_bytes
    if limit == 0:
        return warned(
            name,
            "turned off (SMSRX_SPOOL_MAX_BYTES=0): callbacks get 503 while the broker is down",
            "set SMSRX_SPOOL_MAX_BYTES above 0 (256 MiB by default)",
        )
    if directory.exists() and not directory.is_dir():
        return failed(name, f"{directory}: not a directory", "point SMSRX_SPOOL_DIR at a directory")
    existing = next(path for path in (directory, *directory.absolute().parents) if path.exists())
    stat = os.statvfs(existing)
    free = stat.f_bavail * stat.f_frsize
    if existing == directory:
        used = _size(directory)
        found = f"{directory}: {_bytes(used)} of {_bytes(limit)}, {_locks(directory, holders)}"
    else:
        used = 0
        found = f"{directory}: not created yet (the receiver creates it)"
    found += f"; {_bytes(free)} free on its filesystem"
    if not os.access(existing, os.W_OK):
        return warned(
            name,
            f"{found}; {existing} is not writable by this user (uid {os.getuid()})",
            "make sure the receiver's user can write SMSRX_SPOOL_DIR",
        )
    if used >= 0.8 * limit:
        return warned(
            name,
            f"{found}: nearly full, callbacks get 503 once the broker is down and it is full",
            "bring the broker back so that the spool is replayed, or raise SMSRX_SPOOL_MAX_BYTES",
        )
    if free < limit - used:
        return warned(
            name,
            f"{found}: less than the room SMSRX_SPOOL_MAX_BYTES allows it",
            "free space on that filesystem, move SMSRX_SPOOL_DIR, or lower SMSRX_SPOOL_MAX_BYTES",
        )
    return passed(name, found)
