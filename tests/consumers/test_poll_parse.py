"""The poll clients' answer parsers, without I/O, on the carriers' documented samples."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.polling.client import Outcome
from consumers.polling.gatewaysms import UnexpectedAnswer, parse_answer, parse_recipients
from consumers.polling.vavasms import parse_status
from smsrx.providers import Mapped, get
from smsrx.statuses import Status

GATEWAY = get("gatewaysms").statuses
VAVA = get("vavasms").statuses

# "Récupérer les destinataires d'un message", 200 sample (the doc masks the number as
# +39-3xxxxx5018; report.to gives it in full).
GATEWAY_ITEM: dict[str, Any] = {
    "number": "+39-3495155018",
    "prefix": "+39",
    "send_id": "5e5e65429f272510fb6adcc0_0",
    "body": "test summary2",
    "sms": 1,
    "remaining_chr": 147,
    "state": "DELIVERED",
    "state_description": "DELIVERED_TO_HANDSET",
    "price": 0.03,
    "fields": [],
    "message_id": "5e5e65429f272510fb6adcc0",
    "i": 0,
    "state_detail": "Message delivered to handset",
    "timestamp_sent": {"$date": {"$numberLong": "1583244661371"}},
    "real_cost": 0.03,
    "report": {
        "price": {"pricePerMessage": 0.03, "currency": "EUR"},
        "status": {
            "id": 5,
            "groupId": 3,
            "groupName": "DELIVERED",
            "name": "DELIVERED_TO_HANDSET",
            "description": "Message transmis à l'ordinateur portable",
        },
        "error": {
            "id": 0,
            "name": "NO_ERROR",
            "description": "Pas d'erreur",
            "groupId": 0,
            "groupName": "OK",
            "permanent": False,
        },
        "messageId": "5e5e65429f272510fb6adcc1",
        "doneAt": "2020-03-03T15:11:03.168+0100",
        "smsCount": 1,
        "sentAt": "2020-03-03T15:11:01.467+0100",
        "to": "393495155018",
    },
    "timestamp_delivery": {"$date": {"$numberLong": "1583244663000"}},
    "id": "5e5e65429f272510fb6adcc1",
}

# The status check's documented answers.
VAVA_OK: dict[str, Any] = {
    "code": 0,
    "message": "OPERATION_SUCCES",
    "data": [
        {
            "lot_id": "LOT-20190617-1445425",
            "message_id": "SM-20190617-1445914",
            "status": "sent",
            "description": "Envoyé",
        }
    ],
}
VAVA_901 = {
    "code": "901",
    "status": "INVALID_CREDENTIALS",
    "description": "Identifiant de connexion incorrect",
}
VAVA_709 = {
    "code": "709",
    "message": "EXECUTION_ERROR",
    "description": "Aucun envoi existe pour ce ID",
    "data": [],
}
CI = "+2250700000001"


def gateway_body(*items: Any) -> dict[str, Any]:
    """The documented envelope around ``items``."""
    return {
        "data": list(items),
        "message": f"{len(items)} Result",
        "credit": 90.20949999999985,
        "success": True,
        "error": None,
    }


def item(**changes: Any) -> dict[str, Any]:
    """The doc's recipient item with top-level fields changed (None removes one)."""
    changed = copy.deepcopy(GATEWAY_ITEM)
    for key, value in changes.items():
        if value is None:
            changed.pop(key, None)
        else:
            changed[key] = value
    return changed


def with_report(**changes: Any) -> dict[str, Any]:
    """The doc's item with ``report`` fields changed (None removes one)."""
    changed = item()
    for key, value in changes.items():
        if value is None:
            changed["report"].pop(key, None)
        else:
            changed["report"][key] = value
    return changed


# -- Gateway SMS ---------------------------------------------------------------------


def test_gateway_doc_sample() -> None:
    """The documented item: E.164 number, verbatim status name, delivered, delivery time."""
    [status] = parse_recipients(gateway_body(GATEWAY_ITEM), GATEWAY)
    assert status.recipient == "+393495155018"
    assert status.provider_status == "DELIVERED_TO_HANDSET"
    assert status.mapped == Mapped(Status.DELIVERED, known=True)
    assert status.occurred_at == datetime(2020, 3, 3, 14, 11, 3, tzinfo=UTC)
    assert status.raw == GATEWAY_ITEM


def test_gateway_done_at_when_no_delivery_timestamp() -> None:
    """Without timestamp_delivery, occurred_at is report.doneAt (+0100) in UTC."""
    [status] = parse_recipients(gateway_body(item(timestamp_delivery=None)), GATEWAY)
    assert status.occurred_at == datetime(2020, 3, 3, 14, 11, 3, 168000, tzinfo=UTC)
    assert status.occurred_at.utcoffset() is not None


def test_gateway_no_time_at_all() -> None:
    """Without either timestamp (or with unreadable ones), occurred_at is None."""
    bare = with_report(doneAt=None)
    bare.pop("timestamp_delivery")
    garbled = with_report(doneAt="yesterday")
    garbled["timestamp_delivery"] = {"$date": {"$numberLong": "soon"}}
    statuses = parse_recipients(gateway_body(bare, garbled), GATEWAY)
    assert [s.occurred_at for s in statuses] == [None, None]


def test_gateway_number_from_report_to() -> None:
    """An item without ``number`` is matched by ``report.to``."""
    [status] = parse_recipients(gateway_body(item(number=None)), GATEWAY)
    assert status.recipient == "+393495155018"


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("PENDING", Mapped(Status.SENT, True)),
        ("UNDELIVERABLE", Mapped(Status.FAILED, True)),
        ("EXPIRED", Mapped(Status.EXPIRED, True)),
        ("REJECTED", Mapped(Status.FAILED, True)),
        ("SOMETHING_NEW", Mapped(Status.UNKNOWN, False)),
    ],
)
def test_gateway_groups(group: str, expected: Mapped) -> None:
    """The group decides the status; an unmapped group is unknown."""
    changed = item(state=group)
    changed["report"]["status"]["groupName"] = group
    [status] = parse_recipients(gateway_body(changed), GATEWAY)
    assert status.mapped == expected


def test_gateway_state_disagrees_with_group(caplog: pytest.LogCaptureFixture) -> None:
    """A state that contradicts report.status.groupName is unknown, and logged."""
    caplog.set_level(logging.WARNING, "consumers.polling.gatewaysms")
    [status] = parse_recipients(gateway_body(item(state="PENDING")), GATEWAY)
    assert status.mapped == Mapped(Status.UNKNOWN, known=False)
    assert status.provider_status == "DELIVERED_TO_HANDSET"
    assert "disagrees" in caplog.text and "'PENDING'" in caplog.text
    assert "3495155018" not in caplog.text  # the number is masked


def test_gateway_malformed_items_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """Malformed items are skipped with a warning; the good ones are kept."""
    caplog.set_level(logging.WARNING, "consumers.polling.gatewaysms")
    no_group = item()
    del no_group["report"]["status"]["groupName"]
    int_name = item()
    int_name["report"]["status"]["name"] = 5
    bad = [
        "not an object",
        item(report=None),
        item(report="DELIVERED"),
        no_group,
        int_name,
        item(number="+39-not-a-number", report={"status": GATEWAY_ITEM["report"]["status"]}),
        item(state=3),
    ]
    statuses = parse_recipients(gateway_body(*bad, GATEWAY_ITEM), GATEWAY)
    assert [s.recipient for s in statuses] == ["+393495155018"]
    assert caplog.text.count("skipped") == len(bad)


@pytest.mark.parametrize("body", [None, [], "data", {"success": True}, {"data": {"a": 1}}])
def test_gateway_undocumented_body(body: Any) -> None:
    """A body that is not the documented envelope raises, and polls as RETRY."""
    with pytest.raises(UnexpectedAnswer):
        parse_recipients(body, GATEWAY)
    result = parse_answer(body, GATEWAY, ["+393495155018"])
    assert result.outcome is Outcome.RETRY and result.reason


def test_gateway_answer_only_the_asked_recipients() -> None:
    """parse_answer keeps the recipients asked for, matched by E.164."""
    other = item(number="+39-3495155099")
    result = parse_answer(gateway_body(GATEWAY_ITEM, other), GATEWAY, ["+393495155099"])
    assert result.outcome is Outcome.OK
    assert [s.recipient for s in result.statuses] == ["+393495155099"]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(404, Outcome.NOT_FOUND), (401, Outcome.AUTH_FAILED), (500, Outcome.RETRY)],
)
def test_gateway_unsuccessful_envelope(error: int, outcome: Outcome) -> None:
    """An envelope with success false is read by its error code."""
    body = {"data": [], "success": False, "message": "x", "error": error}
    assert parse_answer(body, GATEWAY, [CI]).outcome is outcome


# -- VavaSMS -------------------------------------------------------------------------


def test_vava_doc_sample() -> None:
    """The documented answer: one status, verbatim, sent, with no time."""
    result = parse_status(VAVA_OK, CI, VAVA)
    assert result.outcome is Outcome.OK
    [status] = result.statuses
    assert (status.recipient, status.provider_status) == (CI, "sent")
    assert status.mapped == Mapped(Status.SENT, known=True)
    assert status.occurred_at is None
    assert status.raw == VAVA_OK["data"][0]


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (VAVA_OK, Outcome.OK),
        ({**VAVA_OK, "code": "0"}, Outcome.OK),
        (VAVA_901, Outcome.AUTH_FAILED),
        ({**VAVA_901, "code": 901}, Outcome.AUTH_FAILED),
        (VAVA_709, Outcome.NOT_FOUND),
        ({**VAVA_709, "code": 709}, Outcome.NOT_FOUND),
        ({"code": "902", "status": "INVALID_SENDER_ID"}, Outcome.RETRY),
    ],
)
def test_vava_codes(body: dict[str, Any], outcome: Outcome) -> None:
    """``code`` means the same as an int or as a string."""
    result = parse_status(body, CI, VAVA)
    assert result.outcome is outcome
    assert (result.reason == "") is (outcome is Outcome.OK)


@pytest.mark.parametrize(
    "body", [None, [], "0", {"message": "x"}, {"code": True}, {"code": 0, "data": {}}]
)
def test_vava_undocumented_body(body: Any) -> None:
    """A body without a readable code or data list is RETRY with a reason."""
    result = parse_status(body, CI, VAVA)
    assert result.outcome is Outcome.RETRY and result.reason


def test_vava_description_fallback() -> None:
    """An unmapped status is mapped by its French description; the status stays verbatim."""
    body = {"code": 0, "data": [{"status": "DLV_OK", "description": "Livré"}]}
    [status] = parse_status(body, CI, VAVA).statuses
    assert status.provider_status == "DLV_OK"
    assert status.mapped == Mapped(Status.DELIVERED, known=True)


def test_vava_unknown_everywhere() -> None:
    """A status and description no row knows are unknown."""
    body = {"code": 0, "data": [{"status": "zzz", "description": "Quoi"}]}
    [status] = parse_status(body, CI, VAVA).statuses
    assert status.mapped == Mapped(Status.UNKNOWN, known=False)


def test_vava_extended_map() -> None:
    """Rows added by SMSRX_VAVASMS_STATUS_MAP are matched like the documented ones."""
    mapping = VAVA.extended({"dlvrd": Status.DELIVERED})
    body = {"code": 0, "data": [{"status": "DLVRD", "description": "?"}]}
    [status] = parse_status(body, CI, mapping).statuses
    assert status.mapped == Mapped(Status.DELIVERED, known=True)


def test_vava_malformed_items_and_other_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Items without a status are skipped; items of another message_id are ignored."""
    caplog.set_level(logging.WARNING, "consumers.polling.vavasms")
    body = {
        "code": 0,
        "data": [
            "x",
            {"description": "Livré"},
            {"message_id": "SM-2", "status": "delivered"},
            {"message_id": "SM-1", "status": "failed"},
        ],
    }
    result = parse_status(body, CI, VAVA, message_id="SM-1")
    assert [s.provider_status for s in result.statuses] == ["failed"]
    assert caplog.text.count("skipped") == 2
