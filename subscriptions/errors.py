"""What can go wrong when we talk to Orange, as types a person and a retry loop can act on.

Every error carries a ``message`` written for the operator, ``retriable`` says
whether trying the same call again later may succeed, and ``exit_code`` what
``smsrx subscriptions`` exits with (:mod:`smsrx.errors`)::

    SubscriptionError                 anything this package refuses or fails to do; exit 1
    ├── InvalidNotifyURL              not https:// on port 443 (refused before any call); exit 2
    └── OrangeError                   Orange's API failed or refused a call
        ├── BadRequest                400 requestError, with Orange's own text
        ├── Unauthorized              401 (token endpoint, or a token refused twice)
        ├── Forbidden                 403
        ├── NotFound                  404, e.g. a subscription id Orange does not know
        ├── UnexpectedResponse        an answer that does not follow the documentation
        ├── ServerError               5xx                     retriable
        ├── Timeout                   no answer in time       retriable
        └── Unreachable               connection failed       retriable

No error ever holds a request header, so neither the app's authorization header
nor an access token can reach a log line through an exception.
"""

from __future__ import annotations

from smsrx.errors import EXIT_USAGE, SmsrxError

__all__ = [
    "BadRequest",
    "Forbidden",
    "InvalidNotifyURL",
    "NotFound",
    "OrangeError",
    "ServerError",
    "SubscriptionError",
    "Timeout",
    "Unauthorized",
    "UnexpectedResponse",
    "Unreachable",
]


class SubscriptionError(SmsrxError):
    """Base class: ``message`` says what happened and what to do about it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidNotifyURL(SubscriptionError):
    """The callback URL is one Orange would never post to."""

    exit_code = EXIT_USAGE


class OrangeError(SubscriptionError):
    """Orange's API answered with an error, or did not answer."""

    outcome: str = "error"
    """The ``outcome`` label of ``smsrx_orange_api_requests_total`` for this error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status Orange answered with, if it answered at all."""


class BadRequest(OrangeError):
    """400 requestError: Orange rejected what we sent; ``detail`` is Orange's own text."""

    outcome = "bad_request"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message, status=400)
        self.detail = detail


class Unauthorized(OrangeError):
    """401: the app's credentials, or a freshly issued token, were refused."""

    outcome = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401)


class Forbidden(OrangeError):
    """403: the app may not do this, e.g. with this sender number."""

    outcome = "forbidden"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=403)


class NotFound(OrangeError):
    """404: Orange does not know the resource, typically a subscription id."""

    outcome = "not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


class UnexpectedResponse(OrangeError):
    """Orange answered, but not as its documentation says it does."""

    outcome = "unexpected"


class ServerError(OrangeError):
    """5xx: Orange is failing; worth retrying later."""

    outcome = "server_error"
    retriable = True


class Timeout(OrangeError):
    """Orange did not answer within ``SMSRX_ORANGE_TIMEOUT``."""

    outcome = "timeout"
    retriable = True


class Unreachable(OrangeError):
    """No connection to Orange's API could be made."""

    outcome = "unreachable"
    retriable = True
