"""Typed errors of the receiver, each carrying the HTTP status it maps to.

::

    ReceiverError              (smsrx.errors.SmsrxError)
     ├── BadRequest            400  malformed or incomplete payload (names the field)
     ├── Forbidden             403  source address not allowed for this provider
     ├── RequestTimeout        408  the client sent its body too slowly
     ├── PayloadTooLarge       413  body over SMSRX_MAX_BODY_BYTES
     ├── UnsupportedMediaType  415  content type the carrier does not use
     └── Unavailable           503  event could not be made durable; retriable
          └── Refused          503  the broker refused some records for good

Adapters raise only :class:`BadRequest` (and :class:`UnsupportedMediaType`); the
request edge maps every error to a JSON response in one place. :class:`Refused` is
what :meth:`~receiver.publisher.Publisher.publish_many` raises when retrying cannot
help (a record too large, an invalid topic name); spool replay sets those records
aside (:mod:`receiver.replay`).
"""

from __future__ import annotations

from http import HTTPStatus

from smsrx.errors import SmsrxError

__all__ = [
    "BadRequest",
    "Forbidden",
    "PayloadTooLarge",
    "ReceiverError",
    "Refused",
    "RequestTimeout",
    "Unavailable",
    "UnsupportedMediaType",
]


class ReceiverError(SmsrxError):
    """Base class: an error answered with ``status`` and a JSON body."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    outcome: str = "error"
    """The ``outcome`` label of the requests metric."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def body(self) -> dict[str, str]:
        """The JSON body answered to the caller."""
        doc = {"error": self.outcome, "detail": self.detail}
        if self.field is not None:
            doc["field"] = self.field
        return doc


class BadRequest(ReceiverError):
    """The payload is malformed or incomplete; ``field`` names the culprit."""

    status = HTTPStatus.BAD_REQUEST
    outcome = "bad_request"


class Forbidden(ReceiverError):
    """The source address is not allowed to post for this provider."""

    status = HTTPStatus.FORBIDDEN
    outcome = "refused_ip"

    def __init__(self, detail: str, *, reason: str = "refused_ip") -> None:
        super().__init__(detail)
        self.outcome = reason


class RequestTimeout(ReceiverError):
    """The client did not send its whole body within SMSRX_CLIENT_TIMEOUT."""

    status = HTTPStatus.REQUEST_TIMEOUT
    outcome = "timeout"


class PayloadTooLarge(ReceiverError):
    """The body is larger than the configured limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    outcome = "too_large"


class UnsupportedMediaType(ReceiverError):
    """The content type is not one this provider's callback uses."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    outcome = "unsupported_media_type"


class Unavailable(ReceiverError):
    """The event could not be made durable in time; the carrier should retry."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    outcome = "unavailable"
    retriable = True


class Refused(Unavailable):
    """The broker refused some records of a batch for good; it acknowledged all the others.

    Sending them again cannot help (a record over the size limit, an invalid topic name).
    """

    retriable = False

    def __init__(self, detail: str, *, reasons: dict[int, str]) -> None:
        super().__init__(detail)
        self.reasons = reasons
        """Why each refused record was refused, by its index in the batch."""
