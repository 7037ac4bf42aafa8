"""Building and publishing one submission (``smsrx submissions publish``)."""

from __future__ import annotations

from collections.abc import Sequence

from smsrx import providers
from smsrx.clock import parse_rfc3339, utcnow
from smsrx.codec import encode
from smsrx.errors import EXIT_USAGE, SmsrxError
from smsrx.events import Submission
from smsrx.kafka import make_producer, start_producer, stop_bounded
from smsrx.phones import InvalidPhoneNumber, to_e164
from smsrx.settings import Settings

__all__ = ["SubmissionError", "build_submission", "build_submissions", "publish_submission"]


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
    if provider.strip() not in providers.PROVIDERS:
        raise SubmissionError(
            f"--provider {provider.strip()!r}: expected one of {', '.join(providers.NAMES)}"
        )
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


def build_submissions(
    *,
    provider: str,
    message_ids: Sequence[str],
    recipients: Sequence[str],
    submitted_at: str | None,
    tags: Sequence[str],
    lot_id: str | None = None,
) -> list[Submission]:
    """The submissions of one send. A provider that gives each recipient its own message
    id (VavaSMS) takes one ``--message-id`` per ``--recipient``, paired in order, and its
    ``lot_id`` as a tag; the others take one message id for every recipient."""
    tags = [*tags, f"lot_id={lot_id}"] if lot_id else list(tags)
    if len(message_ids) == 1:
        return [
            build_submission(
                provider=provider,
                message_id=message_ids[0],
                recipients=recipients,
                submitted_at=submitted_at,
                tags=tags,
            )
        ]
    if provider.strip() != "vavasms":
        raise SubmissionError(
            f"--provider {provider.strip()}: give one --message-id for all the recipients "
            "(only vavasms gives each recipient its own message id)"
        )
    if len(message_ids) != len(recipients):
        raise SubmissionError(
            f"{len(message_ids)} --message-id for {len(recipients)} --recipient: vavasms "
            "gives each recipient its own message id; give one per recipient, in order"
        )
    return [
        build_submission(
            provider=provider,
            message_id=mid,
            recipients=[number],
            submitted_at=submitted_at,
            tags=tags,
        )
        for mid, number in zip(message_ids, recipients, strict=True)
    ]


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
