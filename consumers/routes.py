"""Keyword routing of inbound SMS: the rules file, and the route of one message. Pure.

The rules file (``SMSRX_INBOUND_ROUTES``) is TOML::

    [keywords]                     # optional; these are the defaults' shape
    opt_out = ["STOP", "ARRET"]    # replaces the default opt-out list
    opt_in = ["START"]             # replaces the default opt-in list
    max_words = 3                  # a text of at most this many words matches on its first word

    [[routes]]
    name = "rdv"                   # the route name downstream services filter on
    keywords = ["OUI", "NON"]      # the first word of the text, compared as keywords are
    to = ["1234"]                  # optional: only for SMS sent to this short code or number
    topic = "sms.inbound.rdv.v1"   # optional: a topic of its own, else sms.inbound.routed.v1

The route of a message, in this order:

1. an opt-out keyword (:mod:`consumers.keywords`): ``opt-out``;
2. the first rule, in file order, whose keyword is the text's first word and whose
   ``to`` (if any) names the number the SMS was sent to: that rule's ``name``;
3. an opt-in keyword: ``opt-in``;
4. anything else: ``default``. A message is never dropped for want of a route.

Carriers name the number an SMS was sent to in their payload (``to``, ``recipient``,
``short_code`` or ``shortcode``), if at all: VavaSMS does not, so a rule with ``to``
never matches a VavaSMS message.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.keywords import (
    DEFAULT_MAX_WORDS,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    Action,
    Keywords,
    Match,
    normalise,
)
from smsrx.errors import EXIT_USAGE, SmsrxError

__all__ = [
    "DEFAULT_ROUTE",
    "OPT_IN_ROUTE",
    "OPT_OUT_ROUTE",
    "Decision",
    "Route",
    "Rules",
    "RulesError",
    "load_rules",
    "parse_rules",
    "recipient_of",
]

DEFAULT_ROUTE = "default"
OPT_OUT_ROUTE = "opt-out"
OPT_IN_ROUTE = "opt-in"
_RESERVED = {DEFAULT_ROUTE, OPT_OUT_ROUTE, OPT_IN_ROUTE}
_RECIPIENT_FIELDS = ("to", "recipient", "short_code", "shortcode")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")


class RulesError(SmsrxError):
    """The rules file is missing or malformed; the message names the file and the entry."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Route:
    """One rule of the rules file."""

    name: str
    keywords: frozenset[str]
    """Normalised first words."""
    to: frozenset[str] = frozenset()
    """Digits of the numbers or short codes the SMS must have been sent to; empty: any."""
    topic: str | None = None
    """A topic of its own; None: ``sms.inbound.routed.v1``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one inbound message goes, and the opt-out or opt-in it carries, if any."""

    route: str
    topic: str | None = None
    """The rule's own topic, if it names one."""
    optout: Match | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """The keyword lists and the routes, in file order."""

    keywords: Keywords = field(default_factory=Keywords)
    routes: tuple[Route, ...] = ()

    def decide(self, text: str, recipient: str | None = None) -> Decision:
        """The route of a message with ``text``, sent to ``recipient`` if known."""
        words = normalise(text)
        match = self.keywords.match_words(words)
        if match is not None and match.action is Action.OPT_OUT:
            return Decision(OPT_OUT_ROUTE, optout=match)
        first = words[0] if words else None
        to = _digits(recipient) if recipient else None
        for route in self.routes:
            if first in route.keywords and (not route.to or to in route.to):
                return Decision(route.name, route.topic, optout=match)
        if match is not None:
            return Decision(OPT_IN_ROUTE, optout=match)
        return Decision(DEFAULT_ROUTE)

    def topics(self) -> tuple[str, ...]:
        """The per-route topics the rules name."""
        return tuple(sorted({r.topic for r in self.routes if r.topic}))


def recipient_of(raw: Mapping[str, Any]) -> str | None:
    """The number or short code a carrier says the SMS was sent to, if it says so."""
    for name in _RECIPIENT_FIELDS:
        value = raw.get(name)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return None


def _digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def _strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RulesError(f"{where}: expected a list of non-empty strings")
    return list(value)


def _keywords(where: str, table: Any) -> Keywords:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a table")
    unknown = set(table) - {"opt_out", "opt_in", "max_words"}
    if unknown:
        raise RulesError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    max_words = table.get("max_words", DEFAULT_MAX_WORDS)
    if not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 1:
        raise RulesError(f"{where}.max_words: expected a whole number of at least 1")
    try:
        return Keywords(
            _strings(f"{where}.opt_out", table.get("opt_out", list(DEFAULT_OPT_OUT))),
            _strings(f"{where}.opt_in", table.get("opt_in", list(DEFAULT_OPT_IN))),
            max_words=max_words,
        )
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from None


def _route(where: str, entry: Any, topic_prefix: str) -> Route:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: expected a table")
    unknown = set(entry) - {"name", "keywords", "to", "topic"}
    if unknown:
        raise RulesError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}.name: expected a non-empty string")
    if name in _RESERVED:
        raise RulesError(f"{where}.name: {name!r} is reserved")
    keywords = set()
    for keyword in _strings(f"{where}.keywords", entry.get("keywords")):
        words = normalise(keyword)
        if len(words) != 1:
            raise RulesError(f"{where}.keywords: {keyword!r} must be one word")
        keywords.add(words[0])
    to = frozenset(_digits(t) for t in _strings(f"{where}.to", entry.get("to", [])))
    if "" in to:
        raise RulesError(f"{where}.to: a number or short code needs digits")
    topic = entry.get("topic")
    if topic is not None and (not isinstance(topic, str) or not _TOPIC.fullmatch(topic)):
        raise RulesError(f"{where}.topic: {topic!r} is not a Kafka topic name ([A-Za-z0-9._-])")
    return Route(name, frozenset(keywords), to, topic_prefix + topic if topic else None)


def parse_rules(text: str, *, source: str = "rules", topic_prefix: str = "") -> Rules:
    """Rules from the TOML ``text``; :class:`RulesError` names what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"keywords", "routes"}
    if unknown:
        raise RulesError(f"{source}: unknown table {sorted(unknown)[0]!r}")
    keywords = _keywords(f"{source}: keywords", doc.get("keywords", {}))
    entries = doc.get("routes", [])
    if not isinstance(entries, list):
        raise RulesError(f"{source}: routes: expected [[routes]] entries")
    routes: list[Route] = []
    for index, entry in enumerate(entries):
        route = _route(f"{source}: routes[{index}]", entry, topic_prefix)
        if any(r.name == route.name for r in routes):
            raise RulesError(f"{source}: routes[{index}].name: {route.name!r} appears twice")
        routes.append(route)
    return Rules(keywords, tuple(routes))


def load_rules(path: Path | None, *, topic_prefix: str = "") -> Rules:
    """The rules in the file at ``path``; the defaults (no routes) when ``path`` is None."""
    if path is None:
        return Rules()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"SMSRX_INBOUND_ROUTES={str(path)!r}: cannot read it: {exc}") from None
    return parse_rules(text, source=str(path), topic_prefix=topic_prefix)
