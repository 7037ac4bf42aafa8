"""From the edge to the workers: whatever an adapter accepts (so the receiver would answer
200), both workers can decode and store. Nothing acknowledged is judged invalid later."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consumers.analytics import Analytics
from consumers.batches import Batch
from consumers.inbound import Inbound
from consumers.status_projection import StatusProjection
from receiver.adapters import orange, vavasms
from receiver.errors import BadRequest, UnsupportedMediaType
from smsrx.codec import decode_opt_out, decode_status_change, encode
from smsrx.events import DeliveryReceipt, InboundMessage
from smsrx.kafka import make_producer
from smsrx.settings import Settings

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# --- values -------------------------------------------------------------------------

_ODD_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\ufeff",
    "\u2028",
    "\u202e",
    "\U0010ffff",
    "\uffff",
    "\x85",
    "\x7f",
    "e\u0301",
    "١٢٣٤٥٦٧٨٩٠",
    "²²²²²²²²²²",
    "\t",
    " ",
    "",
    "\\",
    '"',
    "%00",
    "null",
]


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` four times in five, else ``odd``: enough payloads get past the adapter."""
    return st.sampled_from((usual, usual, usual, usual, odd)).flatmap(lambda chosen: chosen)


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text: NUL and control characters, odd unicode (lone surrogates now and then),
    and very long strings."""
    odd = st.sampled_from(_ODD_TEXT)
    return st.one_of(
        st.text(max_size=max_size),
        odd,
        st.tuples(st.text(max_size=5), odd, st.text(max_size=5)).map("".join),
        st.tuples(st.sampled_from("xé€😀\x00"), st.integers(1, 12_000)).map(lambda t: t[0] * t[1]),
    )


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


JSON_VALUES: st.SearchStrategy[Any] = mostly(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | texts(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(10), inner, max_size=3),
        max_leaves=8,
    ),
    st.integers(1, 400).map(_nested),
)

_GOOD_PHONES = st.from_regex(r"(tel:)?\+?(225|33|221|237|1|44|91|800)[0-9]{7,10}", fullmatch=True)
_ODD_PHONES = st.sampled_from(
    [
        "tel:+2250700000000",
        "00225070000000",
        "tel:+8001234567",
        "+999123456789",
        "+10000000000",
        "+" + "9" * 15,
        "tel:+0000000",
        "TEL:+33612345678",
        "+1 415 555 0100",
        " +33612345678",
        "+١٢٣٤٥٦٧٨٩٠١",
        "+33612345678\x00",
    ]
)
PHONE_TEXTS = mostly(_GOOD_PHONES, st.one_of(_ODD_PHONES, texts(20)))
PHONES = mostly(
    PHONE_TEXTS,
    st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False)),
)

_GOOD_IDS = st.one_of(
    st.uuids().map(str),
    st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,60}[\x21-\x7e])?", fullmatch=True),
)
ID_TEXTS = mostly(_GOOD_IDS, texts(300))
IDS = mostly(ID_TEXTS, st.integers())

_OFFSETS = ["", "Z", "+00:00", "+14:00", "-12:00", "+05:30"]
_ODD_DATES = [
    "2019-06-23 12:17:08",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01 00:30:00+00:45",
    "9999-12-31T23:59:59-01:00",
    "9999999999999",
    "0000000000",
    "²²²²²²²²²²",
    "١٦٠٠٠٠٠٠٠٠",
    "１６００００００００",
    "2019-06-23 25:00:00",
    "2019-02-30 00:00",
    "23/06/2019 12:17",
    "1970-01-01T00:00:00Z",
    "2019-06-23T12:17:08.123456789Z",
    "yesterday",
]
DATE_TEXTS = st.one_of(
    st.sampled_from(_ODD_DATES),
    st.tuples(st.datetimes(), st.sampled_from(_OFFSETS), st.sampled_from(["T", " "])).map(
        lambda t: t[0].isoformat(sep=t[2]) + t[1]
    ),
    st.integers(0, 10**14).map(str),
    texts(70),
)
DATES = st.one_of(DATE_TEXTS, st.integers(), st.none())

ORANGE_STATUSES = mostly(
    st.one_of(
        st.sampled_from(sorted(orange.STATUSES.rows)),
        st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True),
    ),
    texts(70),
)

# --- payloads -----------------------------------------------------------------------


def _json_body(doc: Any, ascii_only: bool) -> bytes:
    # \u escapes (NUL, lone surrogates) or raw UTF-8 (lone surrogates then are invalid UTF-8)
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def orange_callbacks(draw: st.DrawFn) -> tuple[str, bytes]:
    """An Orange DR callback body, as JSON."""
    info = st.fixed_dictionaries(
        {"address": PHONES, "deliveryStatus": ORANGE_STATUSES}, optional={"extra": JSON_VALUES}
    )
    notification = draw(
        st.fixed_dictionaries(
            {
                "callbackData": IDS,
                "deliveryInfo": st.one_of(info, st.lists(info, min_size=1, max_size=3)),
            },
            optional={"resourceURL": JSON_VALUES, "extra": JSON_VALUES},
        )
    )
    doc = draw(
        st.fixed_dictionaries(
            {"deliveryInfoNotification": st.just(notification)}, optional={"extra": JSON_VALUES}
        )
    )
    return JSON, _json_body(doc, draw(st.booleans()))


KEYWORDS = st.sampled_from(["STOP", "Arrêt !", "stop please", "START", "Oui merci", "DÉSABONNER"])
"""Opt-out and opt-in texts, so that the inbound worker's opt-out path is drawn too."""


def _vavasms_fields(
    ids: st.SearchStrategy[Any],
    phones: st.SearchStrategy[Any],
    dates: st.SearchStrategy[Any],
    extras: st.SearchStrategy[Any],
) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(["from", "form"]).flatmap(
        lambda sender: st.fixed_dictionaries(
            {
                "message_id": ids,
                sender: phones,
                "content": mostly(texts(200), KEYWORDS),
                "sms_date": dates,
            },
            optional={"extra": extras},
        )
    )


@st.composite
def vavasms_json_callbacks(draw: st.DrawFn) -> tuple[str, bytes]:
    """A VavaSMS inbound notification, as JSON."""
    doc = draw(_vavasms_fields(IDS, PHONES, DATES, JSON_VALUES))
    return JSON, _json_body(doc, draw(st.booleans()))


@st.composite
def vavasms_form_callbacks(draw: st.DrawFn) -> tuple[str, bytes]:
    """A VavaSMS inbound notification, form-encoded (text values only)."""
    doc = draw(_vavasms_fields(ID_TEXTS, PHONE_TEXTS, DATE_TEXTS, texts()))
    return FORM, urlencode(list(doc.items()), encoding="utf-8", errors="surrogatepass").encode()


Parse = Callable[[str | None, bytes, datetime], Sequence[Any]]

CARRIERS: dict[str, tuple[Parse, st.SearchStrategy[tuple[str, bytes]]]] = {
    "orange-dr-json": (orange.parse, orange_callbacks()),
    "vavasms-inbound-json": (vavasms.parse, vavasms_json_callbacks()),
    "vavasms-inbound-form": (vavasms.parse, vavasms_form_callbacks()),
}

# --- the property -------------------------------------------------------------------


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection for every example; each example's writes are rolled back."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def inbound(settings_factory: Callable[..., Settings]) -> AsyncIterator[Inbound]:
    """The inbound worker, with its producer on the test broker (it publishes as it applies)."""
    worker = Inbound(settings_factory(), handle_signals=False)
    worker.producer = make_producer(worker.settings)
    await worker.producer.start()
    yield worker
    await worker.producer.stop()


@pytest.mark.parametrize("carrier", list(CARRIERS))
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_what_an_adapter_accepts_every_worker_stores(
    carrier: str,
    database_url: str,
    conn: asyncpg.Connection,
    inbound: Inbound,
    data: st.DataObject,
) -> None:
    """Every payload an adapter accepts encodes, decodes with each worker's decoder, and is
    applied by status-projection, then analytics (with the status changes it made), then
    the inbound worker (with the opt-outs it derives) against the real PostgreSQL, with
    nothing refused as invalid."""
    parse, callbacks = CARRIERS[carrier]
    content_type, body = data.draw(callbacks, label="callback")
    try:
        events = parse(content_type, body, NOW)
    except (BadRequest, UnsupportedMediaType) as exc:
        event(f"refused: {exc.field}")
        return
    event("accepted")

    config = Settings(database_url=database_url)
    topics = config.topics
    projection = StatusProjection(config, handle_signals=False, expiry_sweep=False)
    analytics = Analytics(config, handle_signals=False)
    items = []
    for accepted in events:
        topic = (
            topics.delivery_receipts if isinstance(accepted, DeliveryReceipt) else topics.inbound
        )
        value = encode(accepted)
        decoded = projection.decoders[topic](value)
        assert decoded == analytics.decoders[topic](value)
        items.append((topic, decoded))

    transaction = conn.transaction()
    await transaction.start()
    try:
        applied = await projection.apply(conn, Batch(items))
        assert not applied.invalid
        assert sum(applied.applied.values()) + sum(applied.duplicate.values()) == len(items)
        changes = [
            decode_status_change(row["value"].encode())
            for row in await conn.fetch(
                "SELECT value::text AS value FROM status_outbox ORDER BY id"
            )
        ]
        counted = await analytics.apply(
            conn, Batch(items + [(topics.message_status, c) for c in changes])
        )
        assert not counted.invalid
        messages = [(t, e) for t, e in items if isinstance(e, InboundMessage)]
        if messages:
            routed = await inbound.apply(conn, Batch(messages))
            assert not routed.invalid
            opt_outs = [
                (inbound.settings.topics.opt_outs, decode_opt_out(value))
                for _, message in messages
                for topic, _, value in inbound._records(
                    message, inbound.rules.decide(message.content)
                )
                if topic == inbound.settings.topics.opt_outs
            ]
            if opt_outs:
                event("opt-out")
                assert not (await inbound.apply(conn, Batch(opt_outs))).invalid
    finally:
        await transaction.rollback()
