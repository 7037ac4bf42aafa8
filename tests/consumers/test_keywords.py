"""The opt-out and opt-in keyword matcher: the documented rule, case by case."""

from __future__ import annotations

import pytest

from consumers.keywords import Keywords, normalise
from smsrx.events import OptOutAction as Action

DEFAULT = Keywords()


@pytest.mark.parametrize(
    ("text", "action", "keyword"),
    [
        ("STOP", Action.OPT_OUT, "STOP"),
        ("stop", Action.OPT_OUT, "STOP"),
        ("Stop", Action.OPT_OUT, "STOP"),
        ("  STOP  ", Action.OPT_OUT, "STOP"),
        ("STOP.", Action.OPT_OUT, "STOP"),
        ("stop!!!", Action.OPT_OUT, "STOP"),
        ('"stop"', Action.OPT_OUT, "STOP"),
        ("¡Stop!", Action.OPT_OUT, "STOP"),
        ("STOP\n", Action.OPT_OUT, "STOP"),
        ("STOP please", Action.OPT_OUT, "STOP"),
        ("stop, merci", Action.OPT_OUT, "STOP"),
        ("STOP 🙏", Action.OPT_OUT, "STOP"),
        ("STOPALL", Action.OPT_OUT, "STOPALL"),
        ("unsubscribe", Action.OPT_OUT, "UNSUBSCRIBE"),
        ("Cancel", Action.OPT_OUT, "CANCEL"),
        ("end", Action.OPT_OUT, "END"),
        ("quit", Action.OPT_OUT, "QUIT"),
        ("Arrêt", Action.OPT_OUT, "ARRET"),
        ("ARRÊT", Action.OPT_OUT, "ARRET"),
        ("arret", Action.OPT_OUT, "ARRET"),
        ("Arrêt merci", Action.OPT_OUT, "ARRET"),
        ("ARRE\u0302T", Action.OPT_OUT, "ARRET"),  # the accent as a combining mark
        ("stopper", Action.OPT_OUT, "STOPPER"),
        ("Désabonner", Action.OPT_OUT, "DESABONNER"),
        ("desabonner svp", Action.OPT_OUT, "DESABONNER"),
        ("désinscrire", Action.OPT_OUT, "DESINSCRIRE"),
        ("START", Action.OPT_IN, "START"),
        ("unstop", Action.OPT_IN, "UNSTOP"),
        ("Yes", Action.OPT_IN, "YES"),
        ("Oui", Action.OPT_IN, "OUI"),
        ("OUI merci", Action.OPT_IN, "OUI"),
        ("retour", Action.OPT_IN, "RETOUR"),
    ],
)
def test_keywords_match_whatever_the_case_accents_and_punctuation(
    text: str, action: Action, keyword: str
) -> None:
    """Case, accents, surrounding punctuation and whitespace do not hide a keyword."""
    match = DEFAULT.match(text)
    assert match is not None, text
    assert (match.action, match.keyword) == (action, keyword)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "stop by the shop tomorrow",
        "Stop by the shop tomorrow please",
        "please stop",
        "don't stop",
        "stopped",
        "stops",
        "non-stop",
        "S.T.O.P",
        "ST OP",
        "arrêtez de m'écrire tout de suite",
        "the end is near for this offer",
        "yesterday",
        "oui je viens demain matin",
        "startup",
        "Bonjour",
        "12345",
    ],
)
def test_near_misses_do_not_match(text: str) -> None:
    """A keyword inside a word, later in the text, or first in a long text is no keyword."""
    assert DEFAULT.match(text) is None


def test_max_words_bounds_the_first_word_rule() -> None:
    """Up to max_words words match on the first word; one more word does not."""
    assert DEFAULT.match("stop it now") is not None
    assert DEFAULT.match("stop it right now") is None
    assert Keywords(max_words=1).match("stop please") is None
    assert Keywords(max_words=1).match("stop!") is not None


def test_opt_out_wins_when_a_word_is_in_both_lists() -> None:
    """A word configured as both opt-out and opt-in is an opt-out."""
    match = Keywords(opt_out=["STOP"], opt_in=["STOP", "GO"]).match("stop")
    assert match is not None and match.action is Action.OPT_OUT
    go = Keywords(opt_out=["STOP"], opt_in=["STOP", "GO"]).match("go")
    assert go is not None and go.action is Action.OPT_IN


def test_configured_lists_replace_the_defaults() -> None:
    """Custom lists are the only keywords: the defaults no longer match."""
    keywords = Keywords(opt_out=["HALTE"], opt_in=["REPRENDRE"])
    assert keywords.match("Halte !") is not None
    assert keywords.match("STOP") is None


def test_a_keyword_must_be_one_word() -> None:
    """Configuring a multi-word or empty keyword is refused, naming it."""
    with pytest.raises(ValueError, match="STOP ALL"):
        Keywords(opt_out=["STOP ALL"])
    with pytest.raises(ValueError, match="'!'"):
        Keywords(opt_out=["!"])


def test_normalise_folds_case_and_accents_and_trims_punctuation() -> None:
    """normalise() gives the words the matcher compares."""
    assert normalise("  «Arrêt», MERCI!  ") == ["arret", "merci"]
    assert normalise("Ⓢtop") == ["stop"]  # NFKD compatibility forms
