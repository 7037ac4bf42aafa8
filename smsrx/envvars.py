"""How a setting is declared and read: its environment variable, the kind of text it
takes, its default and its meaning, written once as a dataclass field's metadata.

:mod:`smsrx.settings` declares every setting with :func:`setting`; this module holds the
machinery, so that the declarations stay short.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, dataclass_transform

from smsrx.errors import EXIT_USAGE, SmsrxError

__all__ = [
    "DURATION",
    "FLAG",
    "KEY",
    "NETWORKS",
    "PATH",
    "PORT",
    "PROVIDER_URL",
    "TEXT",
    "URL",
    "ConfigError",
    "Kind",
    "Network",
    "Setting",
    "at_least",
    "either",
    "one_of",
    "parse_duration",
    "parse_networks",
    "setting",
    "settings_group",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_T = TypeVar("_T")

KEY = "smsrx.setting"
"""The key of a settings field's metadata that holds its :class:`Setting`."""


class ConfigError(SmsrxError, ValueError):
    """A setting is missing or malformed; the message names the variable."""

    exit_code = EXIT_USAGE
    summary = "configuration error"


_DURATION_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_duration(name: str, text: str) -> float:
    """Seconds in ``text``: ``90``, ``1.5s``, ``250ms``, ``10m``, ``72h`` or ``3d``."""
    match = _DURATION_TEXT.match(text)
    if match is None:
        raise ConfigError(f"{name}={text!r}: expected a duration such as 30s, 10m or 72h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_networks(name: str, text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs or addresses, IPv4 or IPv6."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Kind:
    """How a variable's text becomes a value: the parser of a :class:`Setting`."""

    name: str
    """What the text must be, e.g. ``duration`` or ``whole number >= 1``."""
    parse: Callable[[str, str], Any]
    """``parse(variable, text)``: the value, or :class:`ConfigError` naming the variable."""
    blank_is_default: bool = True
    """Whether a variable set to blank text means the default; if not, blank text is
    parsed like any other (a blank allowlist admits nobody, a blank flag is off)."""


def _flag(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r}: expected 1/0, true/false, yes/no or on/off")


def _whole_number(name: str, text: str, minimum: int) -> int:
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


def _port(name: str, text: str) -> int:
    value = _whole_number(name, text, 0)
    if value > 65535:
        raise ConfigError(f"{name}={value}: not a TCP port")
    return value


def at_least(minimum: int) -> Kind:
    return Kind(f"whole number >= {minimum}", partial(_whole_number, minimum=minimum))


def either(words: Sequence[str]) -> str:
    return f"{', '.join(words[:-1])} or {words[-1]}"


def one_of(name: str, text: str, choices: Sequence[str]) -> str:
    word = text.strip().upper()
    if word not in choices:
        raise ConfigError(f"{name}={word!r}: expected {either(choices)}")
    return word


TEXT = Kind("text", lambda name, text: text.strip())
URL = Kind("URL", lambda name, text: text.strip().rstrip("/"))
PROVIDER_URL = Kind("provider URL", URL.parse)
"""A carrier API's base URL: like :data:`URL`, and ``https://`` unless the settings allow
plain HTTP for tests (``Settings`` checks it, since the switch is another setting)."""
PATH = Kind("path", lambda name, text: Path(text.strip()))
FLAG = Kind("flag", _flag, blank_is_default=False)
DURATION = Kind("duration", lambda name, text: parse_duration(name, text.strip()))
NETWORKS = Kind("networks", parse_networks, blank_is_default=False)
PORT = Kind("port", _port)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as declared with :func:`setting`: the metadata of its :class:`Settings` field."""

    env: str
    """The environment variable."""
    kind: Kind
    default: Any
    """The value when the variable is unset (or blank, for most kinds)."""
    help: str
    """What it means, without the default."""
    shown: str | None
    """The default as the help writes it; ``None`` shows none."""
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    """The value of an unset or blank variable, from the other settings' values."""
    secret: bool = False
    """Whether the value is a secret: never in a repr, a log or an error message, and also
    read from the file that ``<env>_FILE`` names (:attr:`file_env`)."""

    @property
    def file_env(self) -> str:
        """The variable naming a file that holds a secret's value (Docker secrets'
        convention): ``SMSRX_ORANGE_AUTH_HEADER_FILE``."""
        return f"{self.env}_FILE"

    @property
    def description(self) -> str:
        """The meaning and the default, as ``smsrx --help`` and the README show them."""
        text = self.help if self.shown is None else f"{self.help} ({self.shown})"
        return (
            f"{text}; secret, also read from a file: {self.file_env}=PATH" if self.secret else text
        )

    def text(self, environ: Mapping[str, str]) -> str | None:
        """The variable's text in ``environ``, or a secret's from the file ``<env>_FILE``
        names, less one trailing newline; None when unset. Both set, or a file that cannot
        be read, is a :class:`ConfigError` naming the variable."""
        text = environ.get(self.env)
        path = environ.get(self.file_env, "").strip() if self.secret else ""
        if not path:
            return text
        if text is not None and text.strip():
            raise ConfigError(f"{self.env} and {self.file_env} are both set: set only one")
        try:
            content = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{self.file_env}={path!r}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{self.file_env}={path!r}: cannot be read ({why})") from None
        return content[:-2] if content.endswith("\r\n") else content.removesuffix("\n")

    def is_blank(self, environ: Mapping[str, str]) -> bool:
        """Whether the variable is unset or blank in ``environ``."""
        return not (self.text(environ) or "").strip()

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value in ``environ`` (the default if unset); :class:`ConfigError` names the variable."""
        text = self.text(environ)
        if text is None or (self.kind.blank_is_default and not text.strip()):
            return self.default
        if not self.secret:
            return self.kind.parse(self.env, text)
        try:
            return self.kind.parse(self.env, text)
        except ConfigError:  # its message would quote the value
            raise ConfigError(
                f"{self.env}: not a valid {self.kind.name} (value not shown: secret)"
            ) from None


def _human(value: Any) -> str | None:
    """A typed default as the help writes it: 1/0 for a flag, ``none`` for no networks."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if value == ():
        return "none"
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return str(value)


def setting(
    env: str,
    *,
    default: Any,
    help: str,
    kind: Kind = TEXT,
    shown: str | Callable[[Any], str] | None = None,
    derive: Callable[[Mapping[str, Any]], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A :class:`Settings` field read from ``env``: the one declaration of that setting.

    ``default`` is the value itself, or text parsed like the variable's (``"72h"``), which
    the help then shows as written. ``shown`` replaces the default in the help: a template
    in which ``{}`` stands for it, or a function of the value. ``derive`` computes the value
    of an unset or blank variable from the other settings instead. A ``secret`` is left
    out of the settings' repr and may be given in a file instead (:attr:`Setting.file_env`).
    """
    value = kind.parse(env, default) if isinstance(default, str) else default
    written = (default or "empty") if isinstance(default, str) else _human(default)
    if callable(shown):
        written = shown(value)
    elif shown is not None:
        written = shown.format(written)
    declared = Setting(env, kind, value, help, written, derive, secret)
    return field(default=value, repr=not secret, metadata={KEY: declared})


@dataclass_transform(frozen_default=True, field_specifiers=(field, setting))
def settings_group(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True)``, telling type checkers that a field declared with
    :func:`setting` has a default. Without slots: ``Settings`` inherits several groups."""
    return dataclass(frozen=True)(cls)
