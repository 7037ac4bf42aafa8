"""Personal data: numbers masked wherever they are written, erasure tokens, and no secret
in `smsrx doctor` or `smsrx --help`. The logs of a running stack are checked in
tests/test_privacy_logs.py, `smsrx privacy erase` in tests/test_privacy_erase.py."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smsrx.cli.dev.process import free_port
from smsrx.logs import MaskingFormatter
from smsrx.phones import country_alpha3
from smsrx.privacy import erasure_token, is_erased, mask_phone
from tests.helpers import process_env

# -- masking ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+2250700000001", "+2250700****01"),
        ("to tel:+33612345678 now", "to tel:+33612****78 now"),
        ("Key (phone)=(+14155552671) exists", "Key (phone)=(+14155****71) exists"),
        (
            "/outbound/tel%3A%2B2250700000099/subscriptions",
            "/outbound/tel%3A%2B2250700****99/subscriptions",
        ),
        ("form=2250709000001&x=1", "form=2250709****01&x=1"),
        ('{"from": "2250709000001"}', '{"from": "2250709****01"}'),
        ("+4915123456789 and +2250700000002", "+491512*****89 and +2250700****02"),
    ],
)
def test_mask_phone_keeps_the_country_code_a_few_digits_and_the_last_two(
    text: str, masked: str
) -> None:
    """Every number in a text, in any of its written forms, is masked in the middle."""
    assert mask_phone(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "event 5f0c9d1e-1c2b-4a5e-9f0e-123456789012",
        "2026-12-02T10:00:00.000000Z took=123.4ms",
        "127.0.0.1:19092 pid=12345",
        "short +2250700 numbers",
        "already +2250700****01",
    ],
)
def test_mask_phone_leaves_what_is_not_a_number(text: str) -> None:
    """Ids, times, addresses, short numbers and masked numbers stay as they are."""
    assert mask_phone(text) == text


def test_bare_digits_are_masked_only_when_asked() -> None:
    """bare=False masks numbers in international form only (what the log formatter does)."""
    assert mask_phone("offset=2250709000001", bare=False) == "offset=2250709000001"
    assert mask_phone("+2250709000001", bare=False) == "+2250709****01"


def test_the_log_formatter_masks_messages_and_tracebacks() -> None:
    """A number in a log line's message or in its traceback leaves the formatter masked."""
    formatter = MaskingFormatter("%(message)s")
    try:
        raise ValueError("refused +2250700000001")
    except ValueError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "for %s", ("tel:+33612345678",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "2250700000001" not in line and "33612345678" not in line
    assert "for tel:+33612****78" in line and "ValueError: refused +2250700****01" in line


def test_an_erasure_token_is_random_and_keeps_the_country() -> None:
    """Tokens are erased:<alpha-3>:<16 hex>, never twice the same, and keep their country."""
    first, second = erasure_token("CIV"), erasure_token("CIV")
    assert re.fullmatch(r"erased:CIV:[0-9a-f]{16}", first) and first != second
    assert is_erased(first) and not is_erased("+2250700000001")
    assert country_alpha3(first) == "CIV"


# -- secrets ----------------------------------------------------------------------------


def test_secrets_stay_out_of_doctor_and_help(tmp_path: Path) -> None:
    """`smsrx doctor` (text and JSON) and `smsrx --help` never print a secret, given or in a file."""
    header = tmp_path / "orange_auth_header"
    header.write_text("Basic c2VjcmV0LWhlYWRlcg==\n")
    env = process_env(
        STATE_DIR=str(tmp_path),
        KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        DATABASE_URL=f"postgresql://smsrx:hunter2-pw@127.0.0.1:{free_port()}/smsrx",
        ORANGE_AUTH_HEADER_FILE=str(header),
        ORANGE_SENDER="2250000",
    )
    outputs = []
    for args in (
        ["doctor", "--timeout", "0.5"],
        ["doctor", "--json", "--timeout", "0.5"],
        ["--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "smsrx.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode in (0, 1), done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "127.0.0.1" in outputs[0] and "SMSRX_ORANGE_AUTH_HEADER_FILE" in outputs[2]
    for output in outputs:
        assert "hunter2" not in output and "c2VjcmV0LWhlYWRlcg" not in output, output


def test_masked_log_arguments_mask_only_when_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Masked argument masks bare digits when the line is written, and nothing otherwise."""
    import logging

    from smsrx import privacy

    calls: list[str] = []
    real = privacy.mask_phone
    monkeypatch.setattr(
        privacy, "mask_phone", lambda text, **kw: calls.append(text) or real(text, **kw)
    )
    logger = logging.getLogger("tests.masked")
    logger.setLevel(logging.WARNING)
    logger.debug("dropped %s", privacy.Masked("2250700000001"))
    assert calls == []
    assert str(privacy.Masked("key 2250700000001")) == "key 2250700****01"
    assert calls == ["key 2250700000001"]
