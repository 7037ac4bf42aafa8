"""The embedded development stack: broker, PostgreSQL, certificates and a supervisor.

Part of the command line, the composition root above every package: only ``smsrx dev``
(and the test suite and the benchmarks, which start the same real services) use it.
It needs the ``dev`` extra.
"""
