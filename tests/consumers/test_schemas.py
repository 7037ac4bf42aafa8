"""The documented schemas of the topics the consumers own match the records they write."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema

from consumers.projection import Stored, plan_receipts
from consumers.submit import build_submission
from smsrx.codec import encode
from smsrx.statuses import Status
from tests.consumers.conftest import T0, receipt

SCHEMAS = Path(__file__).parent.parent.parent / "docs" / "schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _records() -> dict[str, list[dict[str, Any]]]:
    sub = build_submission(
        provider="orange",
        message_id="m-1",
        recipients=["+225 07 00 00 00 01"],
        submitted_at="2026-03-02T09:00:00Z",
        tags=["tenant=acme"],
    )
    one = "+2250700000001"
    first = plan_receipts([receipt("m-1", one, Status.SENT, T0)], {})
    later = plan_receipts(
        [receipt("m-1", one, Status.DELIVERED, T0 + timedelta(seconds=3))],
        {("orange", "m-1", one): Stored(Status.SENT, T0, "x", T0, T0)},
    )
    return {
        "submission.v1.json": [json.loads(encode(sub))],
        "message-status.v1.json": [json.loads(encode(c)) for c in first.changes + later.changes],
    }


def test_records_match_the_documented_schemas() -> None:
    """Submissions and status changes, as encoded on the wire, validate against
    docs/schemas/submission.v1.json and message-status.v1.json, and so do their examples."""
    for name, records in _records().items():
        validator = _validator(name)
        assert records
        for record in records + validator.schema["examples"]:
            validator.validate(record)
