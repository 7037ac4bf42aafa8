"""Least privilege in docker-compose.yml, checked without a Docker engine.

PostgreSQL: every long-running service logs in as its own user, a member of its service's
group role, never as the database owner. Kafka: no plaintext listener; each service that
talks to Kafka has its own SCRAM user over TLS, created at format time and by kafka-setup,
with ACLs that match what its code reads and writes. The scripts the Kafka containers run
(ops/kafka/) are run for real in test_compose_security_scripts.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from consumers.analytics import Analytics
from consumers.inbound import Inbound
from consumers.poller import Poller
from consumers.status_projection import StatusProjection
from smsrx.settings import Settings
from smsrx.topics import Topics
from tests.ops import compose
from tests.ops.security import KAFKA_OPS, acls, brokers, read, scram_users

ROOT = compose.ROOT
POSTGRES_OPS = ROOT / "ops" / "postgres"
MIGRATIONS = ROOT / "smsrx" / "migrations"
MIGRATION = MIGRATIONS / "0007_roles.sql"

# Service -> (its PostgreSQL group role, its Kafka user); None: it does not use that.
EXPECTED = {
    "receiver-1": ("smsrx_receiver", "receiver"),
    "receiver-2": ("smsrx_receiver", "receiver"),
    "status-projection": ("smsrx_status_projection", "status-projection"),
    "analytics": ("smsrx_analytics", "analytics"),
    "inbound": ("smsrx_inbound", "inbound"),
    "poller": ("smsrx_poller", "poller"),
    "subscriptions": ("smsrx_reconciler", None),
    "prune": ("smsrx_prune", None),
    "topics": (None, "admin"),
}
ONE_SHOT_OWNER = {"migrate", "db-logins"}  # the only ones that log in as the owner

TOPICS = Topics()
# What each Kafka user's code writes (produce) to; what it reads comes from the workers.
WRITES = {
    "receiver": {TOPICS.delivery_receipts, TOPICS.inbound, TOPICS.dead_letter},
    "status-projection": {TOPICS.message_status, TOPICS.delivery_receipts, TOPICS.dead_letter},
    "analytics": {TOPICS.dead_letter},
    "inbound": {TOPICS.opt_outs, TOPICS.inbound_routed, TOPICS.dead_letter},
    "poller": {TOPICS.delivery_receipts, TOPICS.dead_letter},
    "sender": {TOPICS.submissions},
}
WORKERS = {
    "status-projection": StatusProjection,
    "analytics": Analytics,
    "inbound": Inbound,
    "poller": Poller,
}


def db_user(service: dict[str, Any]) -> str | None:
    """The user of the service's SMSRX_DATABASE_URL, if it has one."""
    url = compose.environment(service).get("SMSRX_DATABASE_URL")
    return None if url is None else urlsplit(url).username


# --- PostgreSQL ------------------------------------------------------------------------


def test_no_service_logs_in_to_postgres_as_the_owner(project: compose.Project) -> None:
    """Each service's database URL names its own login, a member of its role; only migrate and db-logins use the owner."""
    owner = compose.environment(project.services["postgres"])["POSTGRES_USER"]
    logins = dict(
        re.findall(r"\\set login (\S+)\n\\set group (\S+)", read(POSTGRES_OPS / "logins.psql"))
    )
    groups_made = set(re.findall(r"'(smsrx_[a-z_]+)'", read(MIGRATION).split("LOOP")[0]))
    for later in MIGRATIONS.glob("*.sql"):  # a group role added by a later migration
        groups_made |= set(re.findall(r"CREATE ROLE (smsrx_[a-z_]+) NOLOGIN", read(later)))
    passwords = {}
    for name, service in project.services.items():
        user = db_user(service)
        if name in ONE_SHOT_OWNER or user is None:
            continue
        assert user not in {owner, "postgres"}, f"{name} logs in as the database owner"
        group = EXPECTED[name][0]
        assert logins.get(user) == group, f"{name}: {user} is not a login of {group}"
        assert group in groups_made, group
        passwords.setdefault(group, set()).add(
            urlsplit(compose.environment(service)["SMSRX_DATABASE_URL"]).password
        )
    assert db_user(project.services["migrate"]) == owner
    assert {EXPECTED[n][0] for n in EXPECTED if EXPECTED[n][0]} == set(passwords)
    assert all(len(p) == 1 for p in passwords.values())
    assert len(set().union(*passwords.values())) == len(passwords), "two roles share a password"


def test_db_logins_job_has_every_password_the_script_reads(project: compose.Project) -> None:
    """db-logins runs logins.psql as the owner after migrate, with each PG_*_PASSWORD it reads; the watchdog logs in as its own user."""
    job = project.services["db-logins"]
    env = compose.environment(job)
    wanted = set(re.findall(r"\\getenv \w+ (\w+)", read(POSTGRES_OPS / "logins.psql")))
    assert wanted <= set(env) and all(env[v] for v in wanted)
    assert env["PGUSER"] == compose.environment(project.services["postgres"])["POSTGRES_USER"]
    assert "/etc/smsrx/postgres/logins.psql" in job["command"]
    assert compose.depends_on(job)["migrate"] == "service_completed_successfully"
    watchdog = compose.environment(project.services["grafana-watchdog"])
    assert watchdog["PGUSER"] == "smsrx_watchdog_login"
    assert watchdog["PGPASSWORD"] == env["PG_WATCHDOG_PASSWORD"]
    assert "smsrx_grafana_watchdog(" in " ".join(project.services["grafana-watchdog"]["command"])
    assert "grafana-watchdog" in compose.depends_on(project.services["grafana"])


def test_every_login_of_logins_psql_is_checked_by_the_suite() -> None:
    """The logins the compose script makes are the ones tests/test_roles.py runs it for."""
    made = set(re.findall(r"\\set login (\S+)", read(POSTGRES_OPS / "logins.psql")))
    tested = read(ROOT / "tests" / "test_roles.py")
    assert made and all(f'"{login}"' in tested for login in made)


# --- Kafka: the brokers ----------------------------------------------------------------


def test_no_plaintext_listener_reaches_the_brokers(project: compose.Project) -> None:
    """Every listener is TLS: SASL_SSL for clients, mutual TLS for replication and the quorum; an authorizer with no default access."""
    nodes = brokers(project)
    assert len(nodes) == 3
    for name, env in nodes.items():
        protocols = dict(
            item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
        advertised = {item.split("://")[0] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
        assert advertised <= listeners and listeners <= set(protocols), name
        assert {protocols[listener] for listener in listeners} <= {"SSL", "SASL_SSL"}, name
        for internal in (
            env["KAFKA_INTER_BROKER_LISTENER_NAME"],
            env["KAFKA_CONTROLLER_LISTENER_NAMES"],
        ):
            assert protocols[internal] == "SSL", name
            assert env[f"KAFKA_LISTENER_NAME_{internal}_SSL_CLIENT_AUTH"] == "required", name
        for listener in (x for x in listeners if protocols[x] == "SASL_SSL"):
            assert (
                "ScramLoginModule"
                in env[f"KAFKA_LISTENER_NAME_{listener}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
            )
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        )
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:admin"} | {
            f"User:CN={node}" for node in nodes
        }
        assert env["KAFKA_SSL_KEYSTORE_LOCATION"] == f"/etc/kafka/secrets/{name}.p12"
        assert project.services[name]["command"] == ["bash", "/etc/smsrx/kafka/start.sh"]
        assert "kafka-tls:/etc/kafka/secrets:ro" in project.services[name]["volumes"]
    certs = read(KAFKA_OPS / "certs.sh")
    assert f"BROKERS=${{KAFKA_BROKERS:-{' '.join(sorted(nodes))}}}" in certs


def test_kafka_jobs_run_in_order(project: compose.Project) -> None:
    """Certificates before the brokers; users and ACLs once they are healthy; the services after both."""
    services = project.services
    for name in brokers(project):
        assert compose.depends_on(services[name])["kafka-certs"] == "service_completed_successfully"
    assert set(compose.depends_on(services["kafka-setup"])) >= set(brokers(project))
    for name, (_, user) in EXPECTED.items():
        if user not in (None, "admin"):
            assert compose.depends_on(services[name])["kafka-setup"] == (
                "service_completed_successfully"
            ), name


# --- Kafka: the clients ----------------------------------------------------------------


def test_each_kafka_client_has_its_own_user_over_tls(project: compose.Project) -> None:
    """Every service that talks to Kafka uses SASL_SSL with its own SCRAM user and the cluster's CA; the others carry no Kafka credentials."""
    created = scram_users(next(iter(brokers(project).values())))
    for name, service in project.services.items():
        if "build" not in service:
            continue
        env = compose.environment(service)
        Settings.from_env(env)  # the set is consistent: smsrx would start with it
        user = EXPECTED.get(name, (None, None))[1]
        if user is None:
            assert not {k for k in env if k.startswith("SMSRX_KAFKA_S")} - {
                "SMSRX_KAFKA_SEND_TIMEOUT"
            }, name
            continue
        assert env["SMSRX_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["SMSRX_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["SMSRX_KAFKA_SASL_USERNAME"] == user, name
        assert env["SMSRX_KAFKA_SASL_PASSWORD"] == created[user], f"{name}: not {user}'s password"
        ca = Path(env["SMSRX_KAFKA_CA_FILE"])
        assert f"kafka-ca:{ca.parent}:ro" in service["volumes"], name
    passwords = list(created.values())
    assert len(set(passwords)) == len(passwords), "two Kafka users share a password"


def test_every_user_is_created_at_format_time_and_by_kafka_setup(project: compose.Project) -> None:
    """The SCRAM users of the brokers' format step and of kafka-setup are the same, admin included, and every one but admin has ACLs."""
    at_format = [scram_users(env) for env in brokers(project).values()]
    setup = scram_users(compose.environment(project.services["kafka-setup"]))
    assert all(users == setup for users in at_format)
    with_acls = {acl.user for acl in acls()}
    assert set(setup) - {"admin"} == with_acls
    assert {user for _, user in EXPECTED.values() if user} <= set(setup)


def test_acls_allow_each_service_what_its_code_does_and_no_more(project: compose.Project) -> None:
    """Read: each worker's own group and the topics it consumes; Write: the topics it produces; nothing on the cluster, no Alter, no Delete."""
    lines = acls()
    for acl in lines:
        assert acl.operations <= {"Read", "Write", "Describe", "Create"}, acl
        assert acl.kind in {"topic", "group"}, acl
        if acl.pattern == "prefixed":
            assert acl.operations == {"Describe"} and acl.name == "sms.", acl
        else:
            assert acl.pattern == "literal", acl
            assert acl.kind == "group" or acl.name in TOPICS.all(), acl
        assert "Create" not in acl.operations, f"{acl}: only a route's own topic, added by hand"

    def granted(user: str, operation: str, kind: str) -> set[str]:
        return {
            a.name
            for a in lines
            if a.user == user
            and operation in a.operations
            and a.kind == kind
            and a.pattern == "literal"
        }

    settings = Settings()
    for user, worker_class in WORKERS.items():
        worker = worker_class(settings, handle_signals=False)
        assert granted(user, "Read", "group") == {worker.group}, user
        assert granted(user, "Read", "topic") == set(worker.decoders), user
    for user, topics in WRITES.items():
        assert granted(user, "Write", "topic") == topics, user
    assert granted("receiver", "Read", "topic") == set() == granted("sender", "Read", "topic")
