"""Settings: one frozen object, read from the environment once, in ``main()``.

Each setting is declared once, as a field made by :func:`setting`: its variable, kind,
default and meaning. The fields are grouped by concern (:mod:`smsrx.settings_backends`:
the broker and topics, PostgreSQL, retention; :mod:`smsrx.settings_services`: every
process, the receiver, the workers, Orange; :mod:`smsrx.settings_poll`: status polling), and :class:`Settings` inherits every group.
:meth:`Settings.from_env`, the list that ``smsrx --help`` prints (:data:`VARIABLES`) and
the README's table (:func:`markdown_table`, rewritten by ``make settings-doc``) are all
made from those declarations. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from smsrx.envvars import (
    KEY,
    PROVIDER_URL,
    ConfigError,
    Kind,
    Network,
    Setting,
    parse_duration,
    parse_networks,
    setting,
    settings_group,
)
from smsrx.settings_backends import (
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    DatabaseSettings,
    KafkaSettings,
    RetentionSettings,
)
from smsrx.settings_poll import PollSettings
from smsrx.settings_services import (
    LOG_LEVELS,
    ORANGE_SOURCE_ADDRESSES,
    OrangeSettings,
    ProcessSettings,
    ReceiverSettings,
    WorkerSettings,
)

__all__ = [
    "DECLARED",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "LOG_LEVELS",
    "ORANGE_SOURCE_ADDRESSES",
    "VARIABLES",
    "ConfigError",
    "DatabaseSettings",
    "KafkaSettings",
    "Kind",
    "Network",
    "OrangeSettings",
    "PollSettings",
    "ProcessSettings",
    "ReceiverSettings",
    "RetentionSettings",
    "Setting",
    "Settings",
    "WorkerSettings",
    "markdown_table",
    "parse_duration",
    "parse_networks",
    "setting",
    "state_dir_of",
    "with_table",
]


def state_dir_of(environ: Mapping[str, str]) -> Path:
    """``SMSRX_STATE_DIR``, else ``.smsrx`` in the working directory: where ``smsrx dev``
    keeps its data and its ``dev.json``, and where the other commands look for it."""
    state_dir: Path = DECLARED["state_dir"].read(environ)
    return state_dir


def _as_set(declared: Setting, environ: Mapping[str, str]) -> str:
    """A variable's text as the operator set it, else its default as the help writes it."""
    return environ.get(declared.env, "").strip() or str(declared.shown)


# Tables that deduplicate what a topic may replay keep their rows at least this long.
_REPLAYED_FROM_TOPICS = ("retain_processed", "retain_history")


@settings_group
class Settings(
    PollSettings,
    OrangeSettings,
    RetentionSettings,
    WorkerSettings,
    ReceiverSettings,
    ProcessSettings,
    DatabaseSettings,
    KafkaSettings,
):
    """Everything a smsrx process needs to know, read once by ``main()``: every group of
    settings (their fields come in the order Kafka, database, process, receiver, workers,
    retention, Orange, polling).
    """

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every ``SMSRX_*`` variable; raise :class:`ConfigError` naming a bad one."""
        values = {
            name: declared.read(environ)
            for name, declared in DECLARED.items()
            if declared.derive is None or not declared.is_blank(environ)
        }
        for name, declared in DECLARED.items():
            if declared.derive is not None and name not in values:
                values[name] = declared.derive(values)
        cert, key = DECLARED["tls_cert"], DECLARED["tls_key"]
        if (values["tls_cert"] is None) != (values["tls_key"] is None):
            raise ConfigError(f"{cert.env} and {key.env} must be set together")
        _check_kafka_security(values)
        topics = DECLARED["topic_retention"]
        for name in _REPLAYED_FROM_TOPICS:
            if values[name] < values["topic_retention"]:
                kept = DECLARED[name]
                raise ConfigError(
                    f"{kept.env}={_as_set(kept, environ)} is shorter than "
                    f"{topics.env}={_as_set(topics, environ)}: an event replayed from a "
                    "topic would no longer be known as a duplicate; keep "
                    f"{kept.env} at least as long as {topics.env}"
                )
        return cls(**values)

    def __post_init__(self) -> None:
        if self.insecure_provider_urls:
            return
        for name, declared in DECLARED.items():
            url = getattr(self, name)
            if declared.kind is PROVIDER_URL and not url.lower().startswith("https://"):
                raise ConfigError(
                    f"{declared.env}={url!r}: must be an https:// URL "
                    "(SMSRX_INSECURE_PROVIDER_URLS=1 allows http:// in tests)"
                )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (for the dev supervisor and tests)."""
        return replace(self, **changes)


def _check_kafka_security(values: Mapping[str, Any]) -> None:
    """SASL_SSL has a user and a password; nothing is set that the protocol would ignore."""
    protocol = values["kafka_security_protocol"]
    names = {f: DECLARED[f].env for f in ("kafka_sasl_username", "kafka_sasl_password")}
    given = [env for f, env in names.items() if values[f] is not None]
    where = f"SMSRX_KAFKA_SECURITY_PROTOCOL={protocol}"
    if protocol == "SASL_SSL" and len(given) < len(names):
        raise ConfigError(f"{where} needs {' and '.join(names.values())}")
    if protocol != "SASL_SSL" and given:
        raise ConfigError(f"{given[0]} is set, but {where} sends no credentials: use SASL_SSL")
    if protocol == "PLAINTEXT" and values["kafka_ca_file"] is not None:
        raise ConfigError(f"SMSRX_KAFKA_CA_FILE is set, but {where} uses no TLS")


DECLARED: Mapping[str, Setting] = {f.name: f.metadata[KEY] for f in fields(Settings)}
"""Each :class:`Settings` field's declaration, by field name, in declaration order."""

VARIABLES: dict[str, str] = {declared.env: declared.description for declared in DECLARED.values()}
"""Every variable with its meaning and default, as ``smsrx --help`` lists them."""

_BEGIN = "<!-- settings:begin -->"
_END = "<!-- settings:end -->"


def markdown_table() -> str:
    """The README's table of every variable, from the declarations."""
    rows = ["| variable | meaning (default) |", "|---|---|"]
    for name, text in VARIABLES.items():
        cell = text.replace("|", "\\|")
        rows.append(f"| `{name}` | {cell} |")
    return "\n".join(rows) + "\n"


def with_table(document: str) -> str:
    """``document`` with the text between its settings markers replaced by :func:`markdown_table`."""
    head, begin, rest = document.partition(_BEGIN)
    _, end, tail = rest.partition(_END)
    if not (begin and end):
        raise ValueError(f"no {_BEGIN} ... {_END} markers")
    return f"{head}{_BEGIN}\n\n{markdown_table()}\n{_END}{tail}"


def _main(argv: Sequence[str]) -> int:
    """``python -m smsrx.settings [FILE]``: print the table, or rewrite it in FILE."""
    if not argv:
        sys.stdout.write(markdown_table())
        return 0
    path = Path(argv[0])
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
