"""``python -m smsrx.cli``: the ``smsrx`` command, for child processes and hosts without the script."""

from __future__ import annotations

import sys

from smsrx.cli import main

sys.exit(main())
