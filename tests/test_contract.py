"""The shared event contract: statuses, ids and the codec."""

from __future__ import annotations

import orjson
import phonenumbers
import pycountry
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsrx import phones
from smsrx.clock import utcnow
from smsrx.codec import (
    DecodeError,
    decode_delivery_receipt,
    decode_inbound,
    decode_opt_out,
    decode_routed,
    decode_submission,
    encode,
    encode_routed,
)
from smsrx.deadletter import DeadLetter, encode_dead_letter
from smsrx.events import DeliveryReceipt, InboundMessage, OptOut, OptOutAction, Submission
from smsrx.phones import InvalidPhoneNumber, country_alpha3, to_e164
from smsrx.statuses import Status, supersedes


def _receipt(
    status: Status = Status.DELIVERED, provider_status: str = "DeliveredToTerminal"
) -> DeliveryReceipt:
    return DeliveryReceipt.create(
        provider="orange",
        message_id="m-1",
        recipient="+2250700000000",
        status=status,
        provider_status=provider_status,
        received_at=utcnow(),
        raw={"x": 1},
    )


def test_precedence_order() -> None:
    """Ranks run queued < sent < unknown < expired < failed < delivered."""
    order = [
        Status.QUEUED,
        Status.SENT,
        Status.UNKNOWN,
        Status.EXPIRED,
        Status.FAILED,
        Status.DELIVERED,
    ]
    for low, high in zip(order, order[1:], strict=False):
        assert supersedes(high, low) and not supersedes(low, high)
    assert not supersedes(Status.DELIVERED, Status.DELIVERED)
    assert supersedes(Status.QUEUED, None)


def test_event_id_is_deterministic() -> None:
    """The same receipt always gets the same event_id, whenever it is received."""
    assert _receipt().event_id == _receipt().event_id
    assert _receipt().event_id != _receipt(Status.FAILED, "DeliveryImpossible").event_id


def test_receipt_round_trip() -> None:
    """A receipt survives encode then decode unchanged, with RFC 3339 UTC timestamps."""
    event = _receipt()
    data = encode(event)
    assert b'"received_at":"' in data and b'Z"' in data
    assert decode_delivery_receipt(data) == event


def test_inbound_and_submission_round_trip() -> None:
    """Inbound messages and submissions survive encode then decode unchanged."""
    now = utcnow()
    inbound = InboundMessage.create(
        provider="vavasms",
        message_id="SM-1",
        sender="+2250700000001",
        content="hi",
        sent_at=now,
        sent_at_text="2026-11-22 10:00:00",
        received_at=now,
        raw={},
    )
    assert decode_inbound(encode(inbound)) == inbound
    submission = Submission.create(
        provider="orange",
        message_id="m-1",
        recipients=("+2250700000000",),
        submitted_at=now,
        tags={"tenant": "acme"},
    )
    assert decode_submission(encode(submission)) == submission


def test_opt_outs_and_routed_messages_round_trip() -> None:
    """Opt-out events and routed inbound messages survive encode then decode unchanged."""
    now = utcnow()
    keyword = OptOut.from_keyword(
        phone="+2250700000001",
        action=OptOutAction.OPT_OUT,
        keyword="STOP",
        provider="vavasms",
        inbound_message_id="SM-1",
        occurred_at=now,
        received_at=now,
    )
    manual = OptOut.manual(
        phone="+2250700000001", action=OptOutAction.OPT_IN, occurred_at=now, received_at=now
    )
    assert decode_opt_out(encode(keyword)) == keyword
    assert decode_opt_out(encode(manual)) == manual
    assert keyword.key == b"+2250700000001" and keyword.suppressed and not manual.suppressed
    again = OptOut.manual(
        phone="+2250700000001", action=OptOutAction.OPT_IN, occurred_at=now, received_at=utcnow()
    )
    assert again.event_id == manual.event_id  # the same change at the same moment
    with pytest.raises(DecodeError, match="action"):
        decode_opt_out(encode(keyword).replace(b'"opt_out"', b'"maybe"'))
    inbound = InboundMessage.create(
        provider="vavasms",
        message_id="SM-1",
        sender="+2250700000001",
        content='STOP "now"',
        sent_at=None,
        sent_at_text="",
        received_at=now,
        raw={"a": [1]},
    )
    assert decode_routed(encode_routed(inbound, "opt-out")) == (inbound, "opt-out")


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{", b'{"event_id": 1}', b'{"event_id":"x","status":"nope"}'],
)
def test_decode_rejects_invalid_records(data: bytes) -> None:
    """Anything but a valid record raises the typed DecodeError."""
    with pytest.raises(DecodeError):
        decode_delivery_receipt(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tel:+2250700000000", "+2250700000000"),
        ("22509000001", "+22509000001"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
    ],
)
def test_to_e164(text: str, expected: str) -> None:
    """Carrier number spellings normalise to E.164."""
    assert to_e164(text) == expected


@pytest.mark.parametrize("text", ["", "tel:", "hello", "+1", "+999999999999999999"])
def test_to_e164_rejects(text: str) -> None:
    """Text that is not a possible international number is refused."""
    with pytest.raises(InvalidPhoneNumber):
        to_e164(text)


def _slow_e164(text: str) -> str | Exception:
    try:
        return phones._parse(text)
    except InvalidPhoneNumber as exc:
        return exc


_CODES = sorted(phones._COUNTRY_CODES)
# '+digits': a known country code or any 1-3 digits, then up to 19 digits.
_PLUS_DIGITS = st.builds(
    "+{}{}".format,
    st.sampled_from(_CODES) | st.text("0123456789", min_size=1, max_size=3),
    st.text("0123456789", min_size=0, max_size=19),
)


@settings(max_examples=3000)
@given(text=_PLUS_DIGITS)
def test_fast_e164_path_equals_phonenumbers(text: str) -> None:
    """The '+digits' fast path gives exactly what phonenumbers.parse gives, or stands aside."""
    fast = phones._fast(text)
    slow = _slow_e164(text)
    if fast is not None:
        assert fast == slow
    result: str | Exception
    try:
        result = to_e164(text)
    except InvalidPhoneNumber as exc:
        result = exc
    assert type(result) is type(slow) and (isinstance(result, Exception) or result == slow)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+330612345678", "+33612345678"),  # France strips its national prefix 0
        ("+2250700000000", "+2250700000000"),  # Côte d'Ivoire: the leading 0 is significant
        ("+390612345678", "+390612345678"),  # Italy keeps its leading zero
        ("+11234567890", None),  # NANPA strips a leading 1: the slow path decides
    ],
)
def test_fast_e164_path_cases(text: str, expected: str | None) -> None:
    """Known national-prefix cases: the fast path answers only where nothing is stripped."""
    if expected is None or expected != text:
        assert phones._fast(text) is None
    if expected is not None:
        assert to_e164(text) == expected


def test_country_alpha3() -> None:
    """Numbers map to their ISO 3166 alpha-3 country."""
    assert country_alpha3("+2250700000000") == "CIV"
    assert country_alpha3("+33612345678") == "FRA"
    assert country_alpha3("+80012345678") == "ZZZ"
    assert country_alpha3("+14165550123") == "CAN"  # +1 is shared: phonenumbers decides
    assert country_alpha3("+12025550123") == "USA"
    assert phones._single_region("+14165550123") is None
    assert phones._single_region("+2250700000000") == "CI"


def _slow_alpha3(text: str) -> str:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return "ZZZ"
    country = pycountry.countries.get(alpha_2=region) if region else None
    return country.alpha_3 if country is not None else "ZZZ"


@settings(max_examples=3000)
@given(text=_PLUS_DIGITS)
def test_country_fast_path_equals_phonenumbers(text: str) -> None:
    """The country of '+digits' is what phonenumbers.parse and region_code_for_number give, fast path or not."""
    country_alpha3.cache_clear()
    assert country_alpha3(text) == _slow_alpha3(text)


def test_records_match_published_json_schemas() -> None:
    """Encoded receipts and inbound messages validate against the documented JSON Schemas."""
    import json
    from pathlib import Path

    import jsonschema

    schemas = Path(__file__).parent.parent / "docs" / "schemas"
    now = utcnow()
    cases = [
        ("delivery-receipt.v1.json", _receipt()),
        (
            "inbound.v1.json",
            InboundMessage.create(
                provider="vavasms",
                message_id="SM-1",
                sender="+2250700000001",
                content="hi",
                sent_at=None,
                sent_at_text="?",
                received_at=now,
                raw={},
            ),
        ),
    ]
    inbound = cases[1][1]
    assert isinstance(inbound, InboundMessage)
    cases += [
        (
            "opt-out.v1.json",
            OptOut.from_keyword(
                phone="+2250700000001",
                action=OptOutAction.OPT_OUT,
                keyword="ARRET",
                provider="vavasms",
                inbound_message_id="SM-1",
                occurred_at=now,
                received_at=now,
            ),
        ),
        (
            "opt-out.v1.json",
            OptOut.manual(
                phone="+2250700000001",
                action=OptOutAction.OPT_IN,
                occurred_at=now,
                received_at=now,
                reason="support ticket 42",
            ),
        ),
    ]
    values = [(name, encode(event)) for name, event in cases]
    values.append(("inbound-routed.v1.json", encode_routed(inbound, "rdv")))
    values.append(
        (
            "dead-letter.v1.json",
            encode_dead_letter(
                DeadLetter("analytics", "not JSON", "t", b"k", b"\xff{", partition=1, offset=7)
            ),
        )
    )
    for name, value in values:
        schema = json.loads((schemas / name).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.FormatChecker()
        )
        validator.validate(json.loads(value))


def test_dead_letter_keeps_the_exact_bytes() -> None:
    """A dead letter carries the original value byte for byte, and as text when it is UTF-8."""
    import base64

    raw = orjson.loads(encode_dead_letter(DeadLetter("analytics", "r", "t", None, b"\xff\x00a")))
    assert base64.b64decode(raw["value_base64"]) == b"\xff\x00a"
    assert raw["value_text"] is None
    text = orjson.loads(encode_dead_letter(DeadLetter("analytics", "r", "t", b"k", b"{}")))
    assert text["value_text"] == "{}" and text["key"] == "k"


def test_dead_letter_stays_under_the_record_limit() -> None:
    """A letter for a huge record drops the text copy, then the value, and says so."""
    big = DeadLetter("analytics", "r", "t", b"k", b"a" * 600_000, partition=2, offset=9)
    letter = encode_dead_letter(big)
    assert len(letter) <= 900 * 1024
    doc = orjson.loads(letter)
    assert doc["value_text"] is None and len(doc["value_base64"]) == 800_000
    too_big = DeadLetter("analytics", "r", "t", b"k", b"a" * 2**20, partition=2, offset=9)
    huge = orjson.loads(encode_dead_letter(too_big))
    assert huge["value_omitted"] is True and huge["value_base64"] is None
    assert (huge["partition"], huge["offset"]) == (2, 9)  # where the original still is


def test_readme_lists_every_setting() -> None:
    """The README's configuration table names every SMSRX_* variable the code reads."""
    from pathlib import Path

    from smsrx.settings import VARIABLES

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert [name for name in VARIABLES if f"`{name}`" not in readme] == []


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_event_id_is_uuid5(parts: list[str]) -> None:
    """The hand-spelled event id equals uuid.uuid5 of the joined parts, for any parts."""
    import uuid

    from smsrx.events import _NAMESPACE, event_id_for

    assert event_id_for(*parts) == str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


async def test_fetch_max_wait_reaches_the_consumer() -> None:
    """SMSRX_FETCH_MAX_WAIT is parsed as a duration and bounds every worker's fetch."""
    from smsrx.kafka import make_consumer
    from smsrx.settings import ConfigError, Settings

    assert Settings.from_env({}).fetch_max_wait == 0.1
    settings = Settings.from_env({"SMSRX_FETCH_MAX_WAIT": "20ms"})
    consumer = make_consumer(settings, group_id="g")  # not started: nothing connects
    try:
        assert consumer._fetch_max_wait_ms == 20
    finally:
        await consumer.stop()
    with pytest.raises(ConfigError, match="SMSRX_FETCH_MAX_WAIT"):
        Settings.from_env({"SMSRX_FETCH_MAX_WAIT": "soon"})
