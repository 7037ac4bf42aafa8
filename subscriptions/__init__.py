"""Orange delivery-receipt subscription manager: ``smsrx subscriptions ...``.

Orange posts delivery receipts only to the callback URL registered for the account
through its subscription API; this package registers, checks, repairs and removes it.

- ``errors``: the typed error tree, each with an operator-facing message;
- ``urls``, ``wire``, ``token``: pure parsing and validation, no I/O;
- ``client``: the HTTP client (token cache, one 401 refresh, retries with backoff);
- ``store``: the ``orange_subscriptions`` table;
- ``operations``, ``reconcile``: subscribe/check/unsubscribe and the reconcile pass;
- ``reconciler``: ``reconcile --watch``, the long-running reconciler; ``metrics``: its
  Prometheus metrics;
- ``orange_settings``: the Orange settings it needs, and what to say when one is missing;
- ``report``, ``cli``: command output and the command tree.

Submodules are imported where used, so that ``subscriptions.orange_settings`` stays cheap.
"""

__all__: list[str] = []
