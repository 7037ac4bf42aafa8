"""Status polling: the poll clients of the carriers that document a status API instead
of push receipts (Gateway SMS, VavaSMS), and the poller worker's schedule.

See :mod:`consumers.poller` for the worker and ``docs/consumers.md`` for the design.
"""
