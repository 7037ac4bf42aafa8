"""One item of ``smsrx doctor``'s report: what was checked, whether it is right, and the fix."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Check", "failed", "passed", "warned"]


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one item of the configuration."""

    name: str
    """What was checked, e.g. ``broker`` or ``allowlist vavasms``."""
    ok: bool | None
    """True when right, False when it fails (exit 1), None for a warning (exit 0)."""
    detail: str
    """What was found, in one line."""
    fix: str | None = None
    """What to do about it; None when there is nothing to do."""

    @property
    def status(self) -> str:
        """``ok``, ``warn`` or ``fail``."""
        return {True: "ok", None: "warn", False: "fail"}[self.ok]


def passed(name: str, detail: str) -> Check:
    """An item that is right."""
    return Check(name, True, detail)


def warned(name: str, detail: str, fix: str | None = None) -> Check:
    """An item that works but deserves a look."""
    return Check(name, None, detail, fix)


def failed(name: str, detail: str, fix: str | None = None) -> Check:
    """An item that is wrong: the service will not work as configured."""
    return Check(name, False, detail, fix)
