"""Opt-out and opt-in keywords in the text of an inbound SMS: a pure matcher.

The rule, written down because a wrong answer either ignores a legal opt-out or
silences someone who said "stop by the shop tomorrow":

1. The text is normalised: Unicode NFKD with the accents dropped, case folded, every
   run of whitespace made one space, and punctuation and symbols trimmed from both
   ends of the text and of each word. "  Arrêt !! " becomes ``arret``.
2. It matches a keyword when the whole normalised text is that keyword (``stop``,
   ``stop!``, ``STOP.``), or when the text has at most ``max_words`` words (3 by
   default) and its first word is the keyword ("STOP please", "Arrêt merci").
3. Opt-out keywords are tried before opt-in keywords; a text never matches both.
4. Nothing else matches: not a keyword inside a longer word ("stopper" matches only
   because STOPPER is itself a keyword), not a keyword later in the text ("please
   stop"), not the first word of a long text ("stop by the shop tomorrow").

The lists and ``max_words`` come from settings or the rules file
(:mod:`consumers.routes`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from smsrx.events import OptOutAction as Action

__all__ = [
    "DEFAULT_MAX_WORDS",
    "DEFAULT_OPT_IN",
    "DEFAULT_OPT_OUT",
    "Action",
    "Keywords",
    "Match",
    "normalise",
]

DEFAULT_OPT_OUT = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "ARRET",
    "ARRÊT",
    "STOPPER",
    "DESABONNER",
    "DÉSABONNER",
    "DESINSCRIRE",
)
"""Opt-out keywords: English, and French as written in Cameroon and Côte d'Ivoire."""

DEFAULT_OPT_IN = ("START", "UNSTOP", "YES", "OUI", "RETOUR")
"""Opt-in keywords: they lift a suppression."""

DEFAULT_MAX_WORDS = 3
"""A text of at most this many words matches on its first word."""


@dataclass(frozen=True, slots=True)
class Match:
    """A keyword found in a text."""

    action: Action
    keyword: str
    """The keyword as configured (e.g. ``ARRÊT``), not as the person typed it."""


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _is_edge(char: str) -> bool:
    """Punctuation or a symbol: trimmed from the ends of words."""
    return unicodedata.category(char)[0] in "PS"


def _trim(word: str) -> str:
    start, end = 0, len(word)
    while start < end and _is_edge(word[start]):
        start += 1
    while end > start and _is_edge(word[end - 1]):
        end -= 1
    return word[start:end]


def normalise(text: str) -> list[str]:
    """The words of ``text`` as the matcher compares them (rule 1)."""
    return [w for w in (_trim(word) for word in _fold(text).split()) if w]


class Keywords:
    """The opt-out and opt-in keyword lists, and the matching rule."""

    def __init__(
        self,
        opt_out: Iterable[str] = DEFAULT_OPT_OUT,
        opt_in: Iterable[str] = DEFAULT_OPT_IN,
        *,
        max_words: int = DEFAULT_MAX_WORDS,
    ) -> None:
        if max_words < 1:
            raise ValueError(f"max_words={max_words}: must be at least 1")
        self.max_words = max_words
        self._table: dict[str, Match] = {}
        for action, keywords in ((Action.OPT_IN, opt_in), (Action.OPT_OUT, opt_out)):
            for keyword in keywords:
                words = normalise(keyword)
                if len(words) != 1:
                    raise ValueError(f"keyword {keyword!r}: must be one word")
                # The first spelling of a word reports it (ARRET, not ARRÊT); opt-out is
                # written last and replaces opt-in when a word is in both lists.
                known = self._table.get(words[0])
                if known is None or known.action != action:
                    self._table[words[0]] = Match(action, keyword.strip())

    def match(self, text: str) -> Match | None:
        """The keyword ``text`` is, or None (rule 2)."""
        return self.match_words(normalise(text))

    def match_words(self, words: list[str]) -> Match | None:
        """The keyword the normalised ``words`` of a text are, or None (rule 2)."""
        if not words or len(words) > self.max_words:
            return None
        return self._table.get(words[0])
