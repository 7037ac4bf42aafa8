"""`smsrx doctor`: the items it checks on the machine itself, without a service: the
certificate, the allowlists and the spool."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import trustme

from receiver.spool import Spool
from smsrx.cli.doctor_local import allowlists, certificate, flock_holders, spool
from smsrx.clock import utcnow
from smsrx.settings import Settings, parse_networks
from tests.doctor_harness import by_name

# -- certificate -------------------------------------------------------------------------


def issue(ca: trustme.CA, folder: Path, **options) -> tuple[Path, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1", **options)
    folder.mkdir(parents=True, exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return folder / "cert.pem", folder / "key.pem"


def test_certificate_expiring_in_10_days_warns(ca: trustme.CA, tmp_path: Path) -> None:
    """A certificate 10 days from its end is a warning that gives the days left and says renew."""
    now = utcnow()
    cert, key = issue(ca, tmp_path, not_after=now + timedelta(days=10, hours=1))
    check = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert check.ok is None
    assert "expires in 10 day(s)" in check.detail
    assert "for localhost, 127.0.0.1, key matches" in check.detail
    assert check.fix is not None and check.fix.startswith("renew it")


def test_certificate_expired_or_not_yet_valid_fails(ca: trustme.CA, tmp_path: Path) -> None:
    """An expired certificate fails, and so does one not valid yet."""
    now = utcnow()
    cert, key = issue(ca, tmp_path / "old", not_after=now - timedelta(days=2, hours=1))
    expired = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert expired.ok is False and ", 2 day(s) ago" in expired.detail
    cert, key = issue(ca, tmp_path / "new", not_before=now + timedelta(days=1))
    early = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert early.ok is False and "not valid before" in early.detail


def test_certificate_with_another_key_or_missing_fails(ca: trustme.CA, tmp_path: Path) -> None:
    """A key of another certificate, or a missing file, fails and names the problem."""
    cert, _ = issue(ca, tmp_path / "a")
    _, other_key = issue(ca, tmp_path / "b")
    mismatch = certificate(Settings(tls_cert=cert, tls_key=other_key), utcnow())
    assert mismatch.ok is False and "does not match the certificate" in mismatch.detail
    missing = certificate(Settings(tls_cert=tmp_path / "nope.pem", tls_key=other_key), utcnow())
    assert missing.ok is False and "nope.pem: no such file" in missing.detail


def test_certificate_unset_fails_and_insecure_http_warns() -> None:
    """No certificate fails (the receiver would not start); SMSRX_INSECURE_HTTP=1 is a warning."""
    unset = certificate(Settings(), utcnow())
    assert unset.ok is False and "not set" in unset.detail
    plain = certificate(Settings(insecure_http=True), utcnow())
    assert plain.ok is None and "SMSRX_INSECURE_HTTP=1" in plain.detail


# -- allowlists --------------------------------------------------------------------------


def test_empty_allowlist_warns() -> None:
    """A provider without any allowed address is a warning: all its callbacks get 403."""
    found = by_name(allowlists(Settings(allow_orange=(), allow_vavasms=())))
    for name, variable in (("orange", "SMSRX_ALLOW_ORANGE"), ("vavasms", "SMSRX_ALLOW_VAVASMS")):
        check = found[f"allowlist {name}"]
        assert check.ok is None
        assert check.detail.startswith("none: every ") and "refused (403)" in check.detail
        assert check.fix is not None and check.fix.startswith(f"set {variable}")


def test_allowlist_open_to_everyone_warns() -> None:
    """0.0.0.0/0 or ::/0 in an allowlist or among trusted proxies is a warning naming it."""
    found = by_name(
        allowlists(
            Settings(
                allow_vavasms=parse_networks("test", "10.0.0.0/8,::/0"),
                trusted_proxies=parse_networks("test", "0.0.0.0/0"),
            )
        )
    )
    assert found["allowlist orange"].ok is True
    assert found["allowlist orange"].detail == "80.12.13.2, 80.12.102.66, 80.12.209.66, 80.12.66.97"
    assert found["allowlist vavasms"].ok is None
    assert "any address may post VavaSMS callbacks (::/0)" in found["allowlist vavasms"].detail
    assert found["trusted proxies"].ok is None
    assert "any client can claim an allowed address" in found["trusted proxies"].detail


def test_orange_allowlist_without_its_documented_address_warns() -> None:
    """An Orange allowlist that misses one of Orange's documented addresses is a warning."""
    allowed = parse_networks("test", "80.12.13.2,80.12.102.66,80.12.209.66")
    check = by_name(allowlists(Settings(allow_orange=allowed)))["allowlist orange"]
    assert check.ok is None
    assert "80.12.66.97 are not in it" in check.detail
    assert check.fix == "add 80.12.66.97 to SMSRX_ALLOW_ORANGE"


# -- spool -------------------------------------------------------------------------------


async def test_spool_held_by_a_receiver_is_reported(tmp_path: Path) -> None:
    """A spool a process has open shows that process's pid, its size and the free space."""
    settings = Settings(spool_dir=tmp_path / "spool")
    owned = Spool(settings.spool_dir / "worker-0", max_bytes=settings.spool_max_bytes)
    owned.open()
    try:
        await owned.append("t", b"k", b"v" * 1000)
        held = spool(settings, flock_holders(Path("/proc/locks").read_text()))
    finally:
        owned.close()
    free = spool(settings, flock_holders(Path("/proc/locks").read_text()))
    assert held.ok is True, held
    assert f"locked by a running receiver (worker-0 by pid {os.getpid()})" in held.detail
    assert "1.0 KiB of 256.0 MiB" in held.detail and "free on its filesystem" in held.detail
    assert "not locked: no receiver is running on it" in free.detail


def test_spool_turned_off_or_nearly_full_warns(tmp_path: Path) -> None:
    """SMSRX_SPOOL_MAX_BYTES=0 is a warning, and so is a spool over 80 % of its limit."""
    off = spool(Settings(spool_dir=tmp_path, spool_max_bytes=0), {})
    assert off.ok is None and "turned off" in off.detail
    (tmp_path / "000000000001.seg").write_bytes(b"x" * 900)
    full = spool(Settings(spool_dir=tmp_path, spool_max_bytes=1000), {})
    assert full.ok is None and "nearly full" in full.detail


def test_polling_says_which_carriers_are_polled() -> None:
    """A provider with its credentials is polled; one without says which variables would make it so."""
    from smsrx.cli.doctor_polling import polling

    settings = Settings.from_env({"SMSRX_GATEWAYSMS_TOKEN": "t", "SMSRX_VAVASMS_USERNAME": "u"})
    found = {check.name: check for check in polling(settings)}
    assert found["polling gatewaysms"].ok is True
    assert found["polling gatewaysms"].detail.endswith("is polled (smsrx consumer poller)")
    assert "set SMSRX_VAVASMS_PASSWORD to poll" in found["polling vavasms"].detail
    assert "t" not in found["polling gatewaysms"].detail.split()


def test_polling_beside_smsrx_dev_counts_what_its_poller_polls(tmp_path: Path) -> None:
    """From a second terminal without credentials, a provider the running `smsrx dev` polls is reported polled, naming its pid."""
    from smsrx.cli.dev.state import RunningStack
    from smsrx.cli.doctor_polling import polling

    dev = RunningStack(tmp_path / "dev.json", 4242, {}, ("gatewaysms",))
    found = {check.name: check for check in polling(Settings.from_env({}), dev)}
    assert "polled by the poller of 'smsrx dev' (pid 4242)" in found["polling gatewaysms"].detail
    assert found["polling vavasms"].detail.startswith("not configured")
