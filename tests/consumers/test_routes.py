"""Keyword routing of inbound SMS: the rules file and the route of a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.routes import (
    DEFAULT_ROUTE,
    OPT_IN_ROUTE,
    OPT_OUT_ROUTE,
    RulesError,
    load_rules,
    parse_rules,
    recipient_of,
)
from smsrx.events import OptOutAction as Action

RULES = """
[[routes]]
name = "rdv"
keywords = ["OUI", "NON"]

[[routes]]
name = "promo-1234"
keywords = ["INFO"]
to = ["1234"]

[[routes]]
name = "info"
keywords = ["info", "Détails"]
topic = "sms.inbound.info.v1"
"""


@pytest.mark.parametrize(
    ("text", "recipient", "route", "topic"),
    [
        ("STOP", None, OPT_OUT_ROUTE, None),
        ("Arrêt merci", None, OPT_OUT_ROUTE, None),
        ("OUI", None, "rdv", None),
        ("oui je viens demain matin", None, "rdv", None),  # routing has no word limit
        ("Non.", None, "rdv", None),
        ("INFO", "1234", "promo-1234", None),
        ("INFO", "+1234", "promo-1234", None),
        ("INFO", "5678", "info", "p.sms.inbound.info.v1"),
        ("info please", None, "info", "p.sms.inbound.info.v1"),
        ("details", None, "info", "p.sms.inbound.info.v1"),
        ("START", None, OPT_IN_ROUTE, None),
        ("Bonjour", None, DEFAULT_ROUTE, None),
        ("", None, DEFAULT_ROUTE, None),
        ("stop by the shop tomorrow", None, DEFAULT_ROUTE, None),
    ],
)
def test_route_of_a_message(text: str, recipient: str | None, route: str, topic: str | None):
    """Opt-out first, then the first matching rule, then opt-in, then default."""
    decision = parse_rules(RULES, topic_prefix="p.").decide(text, recipient)
    assert (decision.route, decision.topic) == (route, topic)


def test_opt_in_keyword_routed_by_a_rule_still_carries_the_opt_in() -> None:
    """OUI routed to a campaign is still an opt-in for the suppression list."""
    decision = parse_rules(RULES).decide("oui")
    assert decision.route == "rdv"
    assert decision.optout is not None and decision.optout.action is Action.OPT_IN


def test_opt_out_keyword_beats_a_rule_with_the_same_word() -> None:
    """A rule cannot capture an opt-out keyword."""
    rules = parse_rules('[[routes]]\nname = "x"\nkeywords = ["STOP"]\n')
    assert rules.decide("stop").route == OPT_OUT_ROUTE


def test_keywords_table_replaces_the_lists() -> None:
    """[keywords] in the rules file replaces the opt-out and opt-in lists."""
    rules = parse_rules('[keywords]\nopt_out = ["HALTE"]\nopt_in = ["GO"]\nmax_words = 1\n')
    assert rules.decide("halte").route == OPT_OUT_ROUTE
    assert rules.decide("stop").route == DEFAULT_ROUTE
    assert rules.decide("go go").route == DEFAULT_ROUTE  # max_words = 1
    assert rules.decide("go").route == OPT_IN_ROUTE


def test_no_rules_file_means_default_keywords_and_no_routes() -> None:
    """Without SMSRX_INBOUND_ROUTES every message is opt-out, opt-in or default."""
    rules = load_rules(None)
    assert rules.routes == ()
    assert rules.decide("STOP").route == OPT_OUT_ROUTE
    assert rules.decide("OUI").route == OPT_IN_ROUTE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\n", "unknown table 'other'"),
        ("[[routes]]\nkeywords = ['A']\n", r"routes\[0\]\.name"),
        ("[[routes]]\nname = 'a'\n", r"routes\[0\]\.keywords"),
        ("[[routes]]\nname = 'a'\nkeywords = []\n", None),
        ("[[routes]]\nname = 'default'\nkeywords = ['A']\n", "reserved"),
        ("[[routes]]\nname = 'a'\nkeywords = ['A B']\n", "must be one word"),
        ("[[routes]]\nname = 'a'\nkeywords = ['A']\nto = ['abc']\n", "needs digits"),
        ("[[routes]]\nname = 'a'\nkeywords = ['A']\ncolour = 1\n", "unknown key 'colour'"),
        ("[[routes]]\nname = 'a'\nkeywords = ['A']\ntopic = 'a b'\n", "not a Kafka topic name"),
        (
            "[[routes]]\nname = 'a'\nkeywords = ['A']\n[[routes]]\nname = 'a'\nkeywords = ['B']\n",
            "appears twice",
        ),
        ("[keywords]\nmax_words = 0\n", "max_words"),
        ("[keywords]\nopt_out = 'STOP'\n", "opt_out"),
    ],
)
def test_malformed_rules_name_the_entry(text: str, message: str | None) -> None:
    """A malformed rules file is refused with a message naming the entry."""
    if message is None:  # an empty keyword list is allowed: the route is never chosen
        assert parse_rules(text).decide("a").route == DEFAULT_ROUTE
        return
    with pytest.raises(RulesError, match=message):
        parse_rules(text, source="routes.toml")


def test_unreadable_rules_file_names_the_variable(tmp_path: Path) -> None:
    """A missing rules file is a RulesError naming SMSRX_INBOUND_ROUTES."""
    with pytest.raises(RulesError, match="SMSRX_INBOUND_ROUTES"):
        load_rules(tmp_path / "missing.toml")


def test_recipient_comes_from_the_carrier_payload_when_it_names_one() -> None:
    """to, recipient, short_code or shortcode; None when the carrier says nothing."""
    assert recipient_of({"to": "1234"}) == "1234"
    assert recipient_of({"shortcode": 1234}) == "1234"
    assert recipient_of({"message_id": "x", "form": "+2250700000000"}) is None
