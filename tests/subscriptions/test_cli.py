"""``smsrx subscriptions ...`` end to end: the real CLI against the fake Orange API."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable

import pytest

from smsrx.cli import main
from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings
from subscriptions.orange_settings import missing_credentials, skip_reason
from tests.subscriptions.conftest import AUTH_HEADER, NOTIFY_URL, OTHER_URL, SENDER, sample
from tests.subscriptions.fake_orange import FakeOrange

Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, fake: FakeOrange, database_url: str, keep_logging: None
) -> pytest.MonkeyPatch:
    """The environment of an operator pointing smsrx at the fake Orange API."""
    for name in list(os.environ):
        if name.startswith("SMSRX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SMSRX_DATABASE_URL", database_url)
    monkeypatch.setenv("SMSRX_ORANGE_API_URL", fake.url + "/")
    monkeypatch.setenv("SMSRX_INSECURE_PROVIDER_URLS", "1")  # the fake serves plain HTTP
    monkeypatch.setenv("SMSRX_ORANGE_AUTH_HEADER", AUTH_HEADER)
    monkeypatch.setenv("SMSRX_ORANGE_SENDER", SENDER)
    monkeypatch.setenv("SMSRX_ORANGE_NOTIFY_URL", NOTIFY_URL)
    monkeypatch.setenv("SMSRX_ORANGE_TIMEOUT", "2s")
    return monkeypatch


@pytest.fixture
def smsrx(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``smsrx subscriptions ARGS`` in a thread; return exit code, stdout and stderr."""

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["subscriptions", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def in_place() -> float:
    return sample("smsrx_orange_subscription_in_place")


async def test_done_when(smsrx: Run, fake: FakeOrange) -> None:
    """Register, confirm, restore after removal and change on Orange's side, then remove."""
    code, out, _ = await smsrx("reconcile")
    assert code == 0, out
    assert "reconcile: nothing registered for this sender" in out
    assert f"reconcile: SUBSCRIBED, Orange now posts receipts to {NOTIFY_URL}" in out
    assert fake.registration is not None and fake.registration.notify_url == NOTIFY_URL
    assert in_place() == 1

    code, out, _ = await smsrx("check")
    assert (code, out) == (
        0,
        f"check: OK, Orange posts receipts to {NOTIFY_URL} (id={fake.registration.id})\n",
    )

    lost = fake.registration.id
    fake.delete_behind_our_back()
    code, out, _ = await smsrx("check")
    assert code == 1
    assert out.startswith(f"check: UNKNOWN, Orange does not know id={lost} (404)")
    assert "run 'smsrx subscriptions reconcile'" in out
    assert in_place() == 0
    code, out, _ = await smsrx("reconcile")
    assert code == 0 and "reconcile: RECOVERED, Orange now posts receipts" in out
    assert fake.registration is not None and fake.registration.notify_url == NOTIFY_URL
    assert in_place() == 1

    fake.drift(OTHER_URL)
    code, out, _ = await smsrx("check")
    assert code == 1
    assert out.startswith(f"check: DRIFTED, Orange posts to {OTHER_URL}, we want {NOTIFY_URL}")
    code, out, _ = await smsrx("reconcile")
    assert code == 0 and "reconcile: REPAIRED" in out
    assert fake.registration.notify_url == NOTIFY_URL
    current = fake.registration.id

    code, out, _ = await smsrx("unsubscribe")
    assert (code, out) == (0, f"unsubscribed: id={current} (sender tel:+{SENDER})\n")
    assert fake.registration is None
    assert in_place() == 0

    code, out, _ = await smsrx("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "SENDER", "STATE"]
    assert len(lines) == 4
    assert all(" removed " in line for line in lines[1:])
    assert (
        "unsubscribed" in lines[1] and "drifted to" in lines[2] and "unknown to Orange" in lines[3]
    )


async def test_subscribe_prints_and_stores(smsrx: Run, fake: FakeOrange, db) -> None:
    """subscribe --notify-url registers that URL and says so."""
    code, out, _ = await smsrx("subscribe", "--notify-url", OTHER_URL)
    assert code == 0
    assert fake.registration is not None
    assert out.startswith(
        f"subscribed: id={fake.registration.id} notify_url={OTHER_URL} (sender tel:+{SENDER})"
    )
    row = await db.fetchrow("SELECT sender, notify_url, state FROM orange_subscriptions")
    assert dict(row) == {"sender": SENDER, "notify_url": OTHER_URL, "state": "active"}


async def test_list_marks_current_and_stale(smsrx: Run, fake: FakeOrange) -> None:
    """list shows which stored id is current and which reconcile will remove."""
    code, out, _ = await smsrx("list")
    assert (code, out) == (0, "no subscriptions stored — run 'smsrx subscriptions reconcile'\n")
    await smsrx("subscribe")
    await smsrx("subscribe")
    code, out, _ = await smsrx("list")
    lines = out.splitlines()
    assert "current" in lines[1] and "stale, reconcile removes it" in lines[2]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["subscribe", "--notify-url", "http://example.com/dr"], "must start with https://"),
        (["reconcile", "--notify-url", "https://example.com:8443/dr"], "uses port 8443"),
    ],
)
async def test_bad_notify_url_is_refused_before_calling_orange(
    smsrx: Run, fake: FakeOrange, argv: list[str], says: str
) -> None:
    """A notify URL Orange would refuse exits 2 with the reason, and nothing is sent."""
    code, out, err = await smsrx(*argv)
    assert code == 2 and out == ""
    assert err.startswith("error: notify URL") and says in err
    assert "Orange posts delivery receipts only to" in err
    assert fake.requests == []


async def test_bad_notify_url_setting_is_named(smsrx: Run, env: pytest.MonkeyPatch) -> None:
    """A bad SMSRX_ORANGE_NOTIFY_URL is reported with the variable's name."""
    env.setenv("SMSRX_ORANGE_NOTIFY_URL", "https://example.com:8443/dr")
    code, _, err = await smsrx("reconcile")
    assert code == 2 and err.startswith("error: SMSRX_ORANGE_NOTIFY_URL: notify URL")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SMSRX_ORANGE_AUTH_HEADER", None, "SMSRX_ORANGE_AUTH_HEADER is not set"),
        ("SMSRX_ORANGE_SENDER", None, "SMSRX_ORANGE_SENDER is not set"),
        ("SMSRX_ORANGE_NOTIFY_URL", None, "SMSRX_ORANGE_NOTIFY_URL is not set"),
        ("SMSRX_ORANGE_SENDER", "+2250000", "SMSRX_ORANGE_SENDER='+2250000': expected"),
    ],
)
async def test_missing_setting_exits_2_naming_it(
    smsrx: Run, env: pytest.MonkeyPatch, fake: FakeOrange, name: str, value: str | None, says: str
) -> None:
    """A missing or malformed Orange setting exits 2 and names the variable."""
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    code, _, err = await smsrx("reconcile")
    assert code == 2
    assert err.startswith("smsrx: configuration error: ") and says in err
    assert fake.requests == []


async def test_wrong_credentials_say_what_to_check(
    smsrx: Run, env: pytest.MonkeyPatch, fake: FakeOrange
) -> None:
    """Orange refusing the credentials exits 1 with the variable to check."""
    env.setenv("SMSRX_ORANGE_AUTH_HEADER", "Basic bm9wZTpub3Bl")
    code, out, err = await smsrx("subscribe")
    assert code == 1 and out == ""
    assert "error: Orange refused the credentials (401) — check SMSRX_ORANGE_AUTH_HEADER" in err
    assert "bm9wZTpub3Bl" not in err


async def test_orange_400_is_shown_with_its_text(smsrx: Run, fake: FakeOrange) -> None:
    """A 400 requestError exits 1 showing Orange's own explanation."""
    fake.fail(
        "subscribe",
        400,
        body={
            "requestError": {
                "policyException": {
                    "messageId": "POL0001",
                    "text": "URL %1 not whitelisted",
                    "variables": [NOTIFY_URL],
                }
            }
        },
    )
    code, _, err = await smsrx("subscribe")
    assert code == 1
    assert f"400 requestError): Orange says 'POL0001 URL {NOTIFY_URL} not whitelisted'" in err


async def test_check_with_nothing_stored(smsrx: Run) -> None:
    """check with no stored subscription exits 1 and says what to run."""
    code, out, _ = await smsrx("check")
    assert code == 1
    assert out == (
        f"check: NONE, no subscription stored for sender tel:+{SENDER} — "
        "run 'smsrx subscriptions reconcile'\n"
    )


async def test_check_an_explicit_id(smsrx: Run, fake: FakeOrange) -> None:
    """check --id asks Orange about that id, stored or not."""
    other = fake.subscribe_elsewhere(NOTIFY_URL)
    code, out, _ = await smsrx("check", "--id", other)
    assert (code, out) == (0, f"check: OK, Orange posts receipts to {NOTIFY_URL} (id={other})\n")


async def test_unsubscribe_recovers_a_lost_id(smsrx: Run, fake: FakeOrange) -> None:
    """With the id lost, unsubscribe subscribes again and unsubscribes, as Orange documents."""
    fake.subscribe_elsewhere(OTHER_URL)
    code, out, _ = await smsrx("unsubscribe")
    assert code == 0
    assert "recovered: Orange knew no stored id" in out
    assert fake.registration is None


async def test_unsubscribe_without_id_or_url(
    smsrx: Run, env: pytest.MonkeyPatch, fake: FakeOrange
) -> None:
    """With nothing stored and no URL to recover with, unsubscribe exits 1 saying what to set."""
    env.delenv("SMSRX_ORANGE_NOTIFY_URL")
    code, out, err = await smsrx("unsubscribe")
    assert code == 1 and out == ""
    assert "set SMSRX_ORANGE_NOTIFY_URL or pass --notify-url" in err
    assert fake.count("subscribe") == 0


async def test_unsubscribe_an_explicit_unknown_id(smsrx: Run, fake: FakeOrange) -> None:
    """unsubscribe --id of an id Orange does not know says it is already gone."""
    code, out, _ = await smsrx("unsubscribe", "--id", "nope")
    assert (code, out) == (0, "already gone: Orange no longer knew id=nope (404)\n")


async def test_unreachable_database(smsrx: Run, env: pytest.MonkeyPatch) -> None:
    """A database that cannot be reached exits 1 naming the setting."""
    env.setenv("SMSRX_DATABASE_URL", f"postgresql://smsrx@127.0.0.1:{free_port()}/smsrx")
    code, _, err = await smsrx("list")
    assert code == 1 and err.startswith("error: database (SMSRX_DATABASE_URL): ")


async def test_unmigrated_database_says_to_migrate(
    smsrx: Run, env: pytest.MonkeyPatch, postgres
) -> None:
    """A database without the table exits 1 and says to run 'smsrx db migrate'."""
    name = f"empty_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    env.setenv("SMSRX_DATABASE_URL", postgres.url(name))
    code, _, err = await smsrx("list")
    assert code == 1
    assert err == (
        "error: database (SMSRX_DATABASE_URL) has no orange_subscriptions table — "
        "run 'smsrx db migrate'\n"
    )


def test_reconciler_interval_must_be_a_duration() -> None:
    """--watch with a bad interval is a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["subscriptions", "reconcile", "--watch", "soon"])
    assert caught.value.code == 2


async def test_no_secret_in_output(smsrx: Run, env: pytest.MonkeyPatch, fake: FakeOrange) -> None:
    """At DEBUG, through refreshes, retries and errors, no header or token is printed or logged."""
    env.setenv("SMSRX_LOG_LEVEL", "DEBUG")
    outputs = []
    outputs.append(await smsrx("reconcile"))
    fake.fail("check", 401)
    fake.fail("check", 503)
    outputs.append(await smsrx("check"))
    fake.fail("subscribe", 401, times=2)
    fake.drift(OTHER_URL)
    outputs.append(await smsrx("reconcile"))
    env.setenv("SMSRX_ORANGE_AUTH_HEADER", "Basic c2Vjb25kOnNlY3JldA==")
    outputs.append(await smsrx("unsubscribe"))
    text = "\n".join(out + err for _, out, err in outputs)
    assert [code for code, _, _ in outputs] == [0, 0, 1, 1]
    assert "orange token fetched" in text and "DEBUG" in text  # logs were captured
    for secret in [
        AUTH_HEADER,
        AUTH_HEADER.split()[1],
        "c2Vjb25kOnNlY3JldA==",
        *fake.issued_tokens,
    ]:
        assert secret not in text


def test_missing_credentials_for_dev() -> None:
    """The dev supervisor learns which variables are missing, and a one-line reason."""
    assert missing_credentials(Settings()) == [
        "SMSRX_ORANGE_AUTH_HEADER",
        "SMSRX_ORANGE_SENDER",
        "SMSRX_ORANGE_NOTIFY_URL",
    ]
    ready = Settings(
        orange_auth_header=AUTH_HEADER, orange_sender=SENDER, orange_notify_url=NOTIFY_URL
    )
    assert missing_credentials(ready) == [] and skip_reason(ready) is None
    reason = skip_reason(ready.with_(orange_sender=None))
    assert reason == "subscriptions: reconciler not started, SMSRX_ORANGE_SENDER not set"
    reason = skip_reason(ready.with_(orange_notify_url="http://localhost:8443/dr"))
    assert reason is not None and "must start with https://" in reason
    assert "\n" not in reason
