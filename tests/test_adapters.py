"""Carrier adapters: pure parsing of recorded payloads into canonical events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from receiver.adapters import orange, vavasms
from receiver.errors import BadRequest, UnsupportedMediaType
from smsrx.statuses import Status

SAMPLES = Path(__file__).parent / "samples"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def orange_body(status: str = "DeliveredToTerminal", **changes: object) -> bytes:
    doc = orjson.loads((SAMPLES / "orange_dr.json").read_bytes())
    doc["deliveryInfoNotification"]["deliveryInfo"]["deliveryStatus"] = status
    doc["deliveryInfoNotification"].update(changes)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("provider_status", "status", "final"),
    [
        ("MessageWaiting", Status.QUEUED, False),
        ("DeliveredToNetwork", Status.SENT, False),
        ("DeliveryUncertain", Status.UNKNOWN, False),
        ("DeliveredToTerminal", Status.DELIVERED, True),
        ("DeliveryImpossible", Status.FAILED, True),
        ("SomethingNew", Status.UNKNOWN, False),
    ],
)
def test_orange_status_mapping(provider_status: str, status: Status, final: bool) -> None:
    """Every documented Orange status maps to its canonical status; unknown ones are kept."""
    [event] = orange.parse(JSON, orange_body(provider_status), NOW)
    assert (event.status, event.is_final, event.provider_status) == (status, final, provider_status)
    assert event.provider == "orange"
    assert event.message_id == "8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c"
    assert event.recipient == "+2250700000000"
    assert event.received_at == NOW
    assert event.raw == orjson.loads(orange_body(provider_status))


def test_orange_charset_parameter_is_accepted() -> None:
    """A JSON content type with a charset parameter is still JSON."""
    assert orange.parse("application/json; charset=UTF-8", orange_body(), NOW)


def test_orange_missing_field_is_named() -> None:
    """A receipt without deliveryStatus is refused, naming that field."""
    doc = orjson.loads(orange_body())
    del doc["deliveryInfoNotification"]["deliveryInfo"]["deliveryStatus"]
    with pytest.raises(BadRequest) as info:
        orange.parse(JSON, orjson.dumps(doc), NOW)
    assert info.value.field == "deliveryInfoNotification.deliveryInfo.deliveryStatus"


def test_orange_refuses_forms() -> None:
    """Orange posts JSON only, so a form body is an unsupported media type."""
    with pytest.raises(UnsupportedMediaType):
        orange.parse(FORM, b"a=b", NOW)


def test_vavasms_form_sample() -> None:
    """The documented form fields, with the doc's 'form' spelling, become one inbound event."""
    [event] = vavasms.parse(FORM, (SAMPLES / "vavasms_inbound.form").read_bytes(), NOW)
    assert event.provider == "vavasms"
    assert event.message_id == "SM-20190623-1217879"
    assert event.sender == "+2250709000001"
    assert event.content == "Bonjour, je confirme le rendez-vous"
    assert event.sent_at == datetime(2019, 6, 23, 12, 17, 8, tzinfo=UTC)
    assert event.sent_at_text == "2019-06-23 12:17:08"


def test_vavasms_json_with_from() -> None:
    """A JSON body with the 'from' spelling parses the same way."""
    [event] = vavasms.parse(JSON, (SAMPLES / "vavasms_inbound.json").read_bytes(), NOW)
    assert (event.message_id, event.sender, event.content) == (
        "SM-20190623-1217880",
        "+2250709000002",
        "STOP",
    )


def test_vavasms_unparseable_date_is_kept_as_text() -> None:
    """An sms_date in an unknown format keeps its text and has no parsed time."""
    body = b"message_id=SM-1&from=2250709000001&content=hi&sms_date=yesterday"
    [event] = vavasms.parse(FORM, body, NOW)
    assert (event.sent_at, event.sent_at_text) == (None, "yesterday")


def test_vavasms_same_message_same_event_id() -> None:
    """The event id of an inbound SMS depends only on its VavaSMS message id."""
    first = vavasms.parse(FORM, b"message_id=SM-1&from=2250709000001&content=a&sms_date=x", NOW)
    later = vavasms.parse(
        FORM, b"message_id=SM-1&from=2250709000001&content=a&sms_date=x", datetime.now(UTC)
    )
    assert first[0].event_id == later[0].event_id


def test_vavasms_conflicting_senders_refused() -> None:
    """'from' and 'form' with different values are ambiguous and refused."""
    with pytest.raises(BadRequest) as info:
        vavasms.parse(
            FORM, b"message_id=SM-1&from=2250709000001&form=2250709000002&content=a&sms_date=x", NOW
        )
    assert info.value.field == "from"


def test_huge_numbers_in_raw_payload_still_encode() -> None:
    """An extra field with an integer beyond 64 bits (found by schemathesis) does not break encoding."""
    from smsrx.codec import encode

    doc = orjson.loads(orange_body())
    body = orjson.dumps(doc)[:-1] + b',"extra":123456789012345678901234567890}'
    [event] = orange.parse(JSON, body, NOW)
    assert encode(event)


@pytest.mark.parametrize(
    ("content_type", "body", "field"),
    [
        (FORM, b"message_id=SM-1&from=2250709000001&content=a%00b&sms_date=x", "content"),
        (FORM, b"message_id=SM-1&from=2250709000001&content=a&sms_date=2019%00", "sms_date"),
        (
            JSON,
            b'{"message_id":"SM-1","from":"2250709000001","content":"\\u0000","sms_date":"x"}',
            "content",
        ),
        (
            JSON,
            b'{"message_id":"SM-1","from":"2250709000001","content":"a","sms_date":"\\u0000"}',
            "sms_date",
        ),
        (FORM, b"message_id=SM-1&from=2250709000001&content=a&sms_date=x&note=%00", "note"),
    ],
)
def test_vavasms_nul_is_refused_naming_the_field(
    content_type: str, body: bytes, field: str
) -> None:
    """A NUL anywhere in an inbound SMS (which PostgreSQL cannot store) is refused at the
    edge, naming the field, instead of being acknowledged and dropped by the worker."""
    with pytest.raises(BadRequest) as info:
        vavasms.parse(content_type, body, NOW)
    assert info.value.field == field
    assert "NUL" in info.value.detail


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"note": "a\x00b"}, "note"),
        ({"tags": ["ok", {"k": "\x00"}]}, "tags[1].k"),
        ({"a\x00": 1}, "body"),
    ],
)
def test_orange_nul_in_the_raw_payload_is_refused(extra: dict[str, object], field: str) -> None:
    """A NUL in a part of the Orange payload that is only kept as ``raw`` is refused too:
    the worker unpacks ``raw`` with PostgreSQL's JSON functions, which refuse it."""
    doc = orjson.loads(orange_body())
    doc.update(extra)
    with pytest.raises(BadRequest) as info:
        orange.parse(JSON, orjson.dumps(doc), NOW)
    assert info.value.field == field


@pytest.mark.parametrize(
    "sms_date",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
        "²²²²²²²²²²",  # digits to str.isdigit(), not to int()
    ],
)
def test_vavasms_dates_out_of_range_are_kept_as_text(sms_date: str) -> None:
    """An sms_date that cannot be placed in time in UTC is kept as text, with no parsed
    time, rather than failing the request."""
    [event] = vavasms.parse(
        JSON,
        orjson.dumps(
            {"message_id": "SM-1", "from": "2250709000001", "content": "a", "sms_date": sms_date}
        ),
        NOW,
    )
    assert (event.sent_at, event.sent_at_text) == (None, sms_date)


def test_vavasms_epoch_seconds_in_any_decimal_digits() -> None:
    """Epoch seconds are read in any script's decimal digits, as int() reads them."""
    [event] = vavasms.parse(
        FORM, "message_id=SM-1&from=2250709000001&content=a&sms_date=١٦٠٠٠٠٠٠٠٠".encode(), NOW
    )
    assert event.sent_at == datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)
