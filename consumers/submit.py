"""Building and publishing one submission (``smsrx submissions publish``)."""

from __future__ import annotations

from collections.abc import Sequence

from smsrx.clock import parse_rfc3339, utcnow
from smsrx.codec import encode
from smsrx.errors import EXIT_USAGE, SmsrxError
from smsrx.events import Submission
from smsrx.kafka import make_producer, start_producer, stop_bounded
from smsrx.phones import InvalidPhoneNumber, to_e164
from smsrx.settings import Settings

__all__ = ["SubmissionError", "build_submission", "publish_submission"]


class SubmissionError(SmsrxError, ValueError):
    """An argument of the submission is malformed; the message says which."""

    exit_code = EXIT_USAGE


def build_submission(
    *,
    provider: str,
    message_id: str,
    recipients: Sequence[str],
    submitted_at: str | None,
    tags: Sequence[str],
) -> Submission:
    """A submission from command-line text: numbers normalised to E.164, tags ``k=v``."""
    if not provider.strip() or not message_id.strip():
        raise SubmissionError("--provider and --message-id must not be empty")
    numbers: dict[str, None] = {}
    for text in recipients:
        try:
            numbers[to_e164(text)] = None
        except InvalidPhoneNumber as exc:
            raise SubmissionError(f"--recipient {text!r}: {exc}") from None
    labels: dict[str, str] = {}
    for tag in tags:
        name, sep, value = tag.partition("=")
        if not sep or not name.strip():
            raise SubmissionError(f"--tag {tag!r}: expected KEY=VALUE")
        labels[name.strip()] = value.strip()
    try:
        moment = parse_rfc3339(submitted_at) if submitted_at else utcnow()
    except ValueError:
        raise SubmissionError(
            f"--submitted-at {submitted_at!r}: expected RFC 3339, e.g. 2026-03-02T09:00:00Z"
        ) from None
    return Submission.create(
        provider=provider.strip(),
        message_id=message_id.strip(),
        recipients=tuple(numbers),
        submitted_at=moment,
        tags=labels,
    )


async def publish_submission(settings: Settings, submission: Submission) -> tuple[str, int, int]:
    """Publish one submission (acks=all); return its topic, partition and offset."""
    producer = make_producer(settings)
    await start_producer(producer, settings)
    try:
        meta = await producer.send_and_wait(
            settings.topics.submissions, encode(submission), key=submission.key
        )
    finally:
        await stop_bounded(producer, settings.kafka_send_timeout)
    return settings.topics.submissions, int(meta.partition), int(meta.offset)
