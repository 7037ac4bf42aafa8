"""Settings: one declaration per setting, and what is made from it."""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from pathlib import Path

import pytest

from smsrx.settings import (
    DECLARED,
    VARIABLES,
    ConfigError,
    Setting,
    Settings,
    parse_duration,
    state_dir_of,
    with_table,
)
from smsrx.topics import Topics

README = Path(__file__).parent.parent / "README.md"

# Values each kind refuses; a kind that accepts any text is listed in ANY_TEXT instead.
BAD = {
    "flag": ["maybe"],
    "duration": ["soon", "5 minutes"],
    "networks": ["10.0.0.0/8,proxy"],
    "port": ["http", "-1", "65536"],
    "whole number": ["many", "1.5", "-1"],
    "log level": ["verbose"],
    "security protocol": ["SASL_PLAINTEXT", "TLS"],
    "SASL mechanism": ["GSSAPI"],
    "delays": ["1m,,5m", "0s", "soon", ","],
    "requests/s": ["fast", "0", "-1", "10001"],
    "status map": ["sent", "=delivered", "dlvrd=arrived"],
}
ANY_TEXT = {"text", "URL", "provider URL", "path", "topic prefix"}  # provider URL: below


def _category(declared: Setting) -> str:
    return declared.kind.name.split(" >=")[0]


REFUSING = [d for d in DECLARED.values() if _category(d) in BAD]


def test_every_field_is_declared_with_its_variable() -> None:
    """Every Settings field carries a Setting; variables are unique and are what --help lists."""
    for f in fields(Settings):
        assert isinstance(f.metadata.get("smsrx.setting"), Setting), f.name
    names = [declared.env for declared in DECLARED.values()]
    assert len(set(names)) == len(names) == len(fields(Settings))
    assert all(name.startswith("SMSRX_") for name in names)
    assert list(VARIABLES) == names


def test_every_kind_is_tested() -> None:
    """Each kind either has bad values below or accepts any text."""
    assert {_category(d) for d in DECLARED.values()} <= set(BAD) | ANY_TEXT


def test_empty_environment_gives_the_defaults() -> None:
    """from_env of no variables equals Settings(), and so do blank ones where blank means default."""
    assert Settings.from_env({}) == Settings()
    blank = {d.env: "  " for d in DECLARED.values() if d.kind.blank_is_default}
    assert Settings.from_env(blank) == Settings()


def test_blank_flag_is_off_and_blank_allowlist_admits_nobody() -> None:
    """A flag or allowlist set to blank text is read, not defaulted."""
    settings = Settings.from_env({"SMSRX_KAFKA_IDEMPOTENCE": "", "SMSRX_ALLOW_ORANGE": " "})
    assert settings.kafka_idempotence is False
    assert settings.allow_orange == ()


@pytest.mark.parametrize("declared", REFUSING, ids=lambda d: d.env)
def test_bad_value_names_the_variable(declared: Setting) -> None:
    """Each variable's malformed values raise ConfigError naming that variable."""
    for value in BAD[_category(declared)]:
        with pytest.raises(ConfigError, match=f"^{declared.env}[=:]"):
            Settings.from_env({declared.env: value})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SMSRX_FETCH_MAX_WAIT",
            "soon",
            "SMSRX_FETCH_MAX_WAIT='soon': expected a duration such as 30s, 10m or 72h",
        ),
        ("SMSRX_RECEIVER_PORT", "70000", "SMSRX_RECEIVER_PORT=70000: not a TCP port"),
        (
            "SMSRX_BATCH_MAX_RECORDS",
            " many ",
            "SMSRX_BATCH_MAX_RECORDS='many': expected a whole number",
        ),
        ("SMSRX_MAX_BODY_BYTES", "1023", "SMSRX_MAX_BODY_BYTES=1023: must be at least 1024"),
        ("SMSRX_TOPIC_PARTITIONS", "0", "SMSRX_TOPIC_PARTITIONS=0: must be at least 1"),
        ("SMSRX_DEDUP_CACHE_SIZE", "-1", "SMSRX_DEDUP_CACHE_SIZE=-1: must be at least 0"),
        (
            "SMSRX_INSECURE_HTTP",
            "maybe",
            "SMSRX_INSECURE_HTTP='maybe': expected 1/0, true/false, yes/no or on/off",
        ),
        (
            "SMSRX_TRUSTED_PROXIES",
            "10.0.0.0/8, proxy",
            "SMSRX_TRUSTED_PROXIES: 'proxy' is not an IP address or CIDR",
        ),
        (
            "SMSRX_LOG_LEVEL",
            "verbose",
            "SMSRX_LOG_LEVEL='VERBOSE': expected DEBUG, INFO, WARNING or ERROR",
        ),
        ("SMSRX_TLS_CERT", "cert.pem", "SMSRX_TLS_CERT and SMSRX_TLS_KEY must be set together"),
        ("SMSRX_TLS_KEY", "key.pem", "SMSRX_TLS_CERT and SMSRX_TLS_KEY must be set together"),
    ],
)
def test_error_messages(name: str, value: str, message: str) -> None:
    """A bad value's message names the variable, the value and what was expected."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    assert str(error.value) == message


def test_special_rules() -> None:
    """Prefix into Topics, log level upper-cased, API URL without its trailing slash, TLS as a pair."""
    settings = Settings.from_env(
        {
            "SMSRX_TOPIC_PREFIX": " staging. ",
            "SMSRX_LOG_LEVEL": "debug",
            "SMSRX_ORANGE_API_URL": "https://orange.example/ ",
            "SMSRX_TLS_CERT": "cert.pem",
            "SMSRX_TLS_KEY": "key.pem",
            "SMSRX_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "SMSRX_EXPIRY_HORIZON": "3d",
        }
    )
    assert settings.topics == Topics(prefix="staging.")
    assert settings.log_level == "DEBUG"
    assert settings.orange_api_url == "https://orange.example"
    assert (settings.tls_cert, settings.tls_key) == (Path("cert.pem"), Path("key.pem"))
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    assert settings.expiry_horizon == 3 * 86400.0


SECRETS = [d for d in DECLARED.values() if d.secret]


def test_the_secrets_are_marked() -> None:
    """The database URL (its password) and Orange's credentials are secret settings."""
    assert {d.env for d in SECRETS} >= {"SMSRX_DATABASE_URL", "SMSRX_ORANGE_AUTH_HEADER"}


@pytest.mark.parametrize("declared", SECRETS, ids=lambda d: d.env)
def test_a_secret_is_read_from_its_file(declared: Setting, tmp_path: Path) -> None:
    """<NAME>_FILE gives a secret's value, less one trailing newline (LF or CRLF)."""
    path = tmp_path / "secret"
    for content, text in [("s3cr\u00e9t\n", "s3cr\u00e9t"), ("a\r\n", "a"), ("b\n\n", "b\n")]:
        path.write_text(content, encoding="utf-8", newline="")
        assert declared.text({f"{declared.env}_FILE": str(path)}) == text
    path.write_text("Basic-c2VjcmV0\n")
    assert declared.read({f"{declared.env}_FILE": str(path)}) == "Basic-c2VjcmV0"
    name = next(k for k, d in DECLARED.items() if d is declared)
    assert "c2VjcmV0" not in repr(Settings().with_(**{name: "Basic-c2VjcmV0"}))


@pytest.mark.parametrize("declared", SECRETS, ids=lambda d: d.env)
def test_a_secret_and_its_file_are_not_both_set(declared: Setting, tmp_path: Path) -> None:
    """Setting a secret and its _FILE is a ConfigError; a missing file one naming it."""
    path = tmp_path / "secret"
    path.write_text("x\n")
    with pytest.raises(ConfigError) as both:
        Settings.from_env({declared.env: "y", f"{declared.env}_FILE": str(path)})
    assert str(both.value) == f"{declared.env} and {declared.env}_FILE are both set: set only one"
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError) as error:
        Settings.from_env({f"{declared.env}_FILE": str(missing)})
    assert str(error.value) == f"{declared.env}_FILE={str(missing)!r}: no such file"


def test_only_secrets_are_read_from_files(tmp_path: Path) -> None:
    """A _FILE variable of a setting that is not secret is not read."""
    path = tmp_path / "bootstrap"
    path.write_text("elsewhere:9092")
    assert Settings.from_env({"SMSRX_KAFKA_BOOTSTRAP_FILE": str(path)}) == Settings()


def test_secrets_stay_out_of_the_repr() -> None:
    """Neither the database password nor Orange's header is in the settings' repr."""
    settings = Settings.from_env(
        {
            "SMSRX_DATABASE_URL": "postgresql://smsrx:hunter2@db:5432/smsrx",
            "SMSRX_ORANGE_AUTH_HEADER": "Basic c21zcng6dG9w",
        }
    )
    assert settings.database_url.endswith("hunter2@db:5432/smsrx")
    assert "hunter2" not in repr(settings) and "c21zcng6dG9w" not in repr(settings)


@pytest.mark.parametrize("url", ["http://api.orange.com", "ftp://api.orange.com", "api.orange.com"])
def test_provider_urls_must_be_https(url: str) -> None:
    """A provider API URL other than https:// is a ConfigError, unless tests allow it."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SMSRX_ORANGE_API_URL": url})
    assert str(error.value) == (
        f"SMSRX_ORANGE_API_URL={url!r}: must be an https:// URL "
        "(SMSRX_INSECURE_PROVIDER_URLS=1 allows http:// in tests)"
    )
    with pytest.raises(ConfigError):
        Settings(orange_api_url=url)
    allowed = {"SMSRX_ORANGE_API_URL": url, "SMSRX_INSECURE_PROVIDER_URLS": "1"}
    assert Settings.from_env(allowed).orange_api_url == url
    assert Settings.from_env({"SMSRX_ORANGE_API_URL": "HTTPS://api.orange.com"})
    assert "tests" in VARIABLES["SMSRX_INSECURE_PROVIDER_URLS"]


def test_metrics_listen_on_loopback_by_default() -> None:
    """The /metrics ports are on 127.0.0.1 unless SMSRX_METRICS_HOST says otherwise."""
    assert Settings.from_env({}).metrics_host == "127.0.0.1"
    assert Settings.from_env({"SMSRX_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def test_spool_dir_follows_the_state_dir_unless_set() -> None:
    """SMSRX_SPOOL_DIR defaults to <state dir>/spool; set, it wins."""
    assert Settings.from_env({"SMSRX_STATE_DIR": "/srv/x"}).spool_dir == Path("/srv/x/spool")
    both = Settings.from_env({"SMSRX_STATE_DIR": "/srv/x", "SMSRX_SPOOL_DIR": "/var/spool"})
    assert (both.state_dir, both.spool_dir) == (Path("/srv/x"), Path("/var/spool"))
    assert state_dir_of({}) == Path(".smsrx") == Settings().state_dir
    assert state_dir_of({"SMSRX_STATE_DIR": " /srv/x "}) == Path("/srv/x")


def test_help_shows_each_default_as_written() -> None:
    """Durations as written, 256 MiB, and explanations kept around the default."""
    assert VARIABLES["SMSRX_EXPIRY_HORIZON"].endswith("(72h)")
    assert VARIABLES["SMSRX_FETCH_MAX_WAIT"].endswith("(100ms)")
    assert VARIABLES["SMSRX_SPOOL_MAX_BYTES"].endswith("(256 MiB)")
    assert VARIABLES["SMSRX_KAFKA_IDEMPOTENCE"].endswith("(1)")
    assert VARIABLES["SMSRX_TOPIC_REPLICATION"].endswith("(1; 3 on a real cluster)")
    assert VARIABLES["SMSRX_MAX_CONNECTIONS"].startswith(
        "open connections per receiver process; past it, new ones are closed before TLS (4096: "
    )
    assert VARIABLES["SMSRX_TLS_CERT"] == "PEM certificate chain for HTTPS"
    assert "secret" in VARIABLES["SMSRX_ORANGE_AUTH_HEADER"]
    assert "Basic" not in repr(Settings(orange_auth_header="Basic c2VjcmV0"))


def test_shown_durations_are_the_defaults() -> None:
    """Every duration's default, as the help writes it, parses to the field's default."""
    for name, declared in DECLARED.items():
        if declared.kind.name == "duration":
            assert declared.shown is not None
            assert parse_duration(declared.env, declared.shown) == getattr(Settings(), name)


def test_readme_table_is_generated() -> None:
    """README.md's table of settings is the one smsrx/settings.py makes."""
    readme = README.read_text(encoding="utf-8")
    assert readme == with_table(readme), (
        "README.md's settings table differs from smsrx/settings.py: run 'make settings-doc' "
        "(.venv/bin/python -m smsrx.settings README.md)"
    )
