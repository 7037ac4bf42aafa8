"""The embedded development stack: broker, PostgreSQL, certificates and a supervisor.

Also used by the test suite and the benchmarks, which start the same real services.
"""
