"""Least privilege in docker-compose.yml, checked without a Docker engine.

PostgreSQL: every long-running service logs in as its own user, a member of its service's
group role, never as the database owner. Kafka: no plaintext listener; each service that
talks to Kafka has its own SCRAM user over TLS, created at format time and by kafka-setup,
with ACLs that match what its code reads and writes. The scripts the Kafka containers run
(ops/kafka/) are run here for real, with the image's tools replaced by recorders, and the
certificates they issue are checked with a real TLS handshake.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from consumers.analytics import Analytics
from consumers.inbound import Inbound
from consumers.status_projection import StatusProjection
from smsrx.kafka import security_options
from smsrx.settings import Settings
from smsrx.topics import Topics
from tests.ops import compose

ROOT = compose.ROOT
KAFKA_OPS = ROOT / "ops" / "kafka"
POSTGRES_OPS = ROOT / "ops" / "postgres"
MIGRATION = ROOT / "smsrx" / "migrations" / "0007_roles.sql"

# Service -> (its PostgreSQL group role, its Kafka user); None: it does not use that.
EXPECTED = {
    "receiver-1": ("smsrx_receiver", "receiver"),
    "receiver-2": ("smsrx_receiver", "receiver"),
    "status-projection": ("smsrx_status_projection", "status-projection"),
    "analytics": ("smsrx_analytics", "analytics"),
    "inbound": ("smsrx_inbound", "inbound"),
    "subscriptions": ("smsrx_reconciler", None),
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
    "sender": {TOPICS.submissions},
}
WORKERS = {"status-projection": StatusProjection, "analytics": Analytics, "inbound": Inbound}


@pytest.fixture(scope="module")
def project() -> compose.Project:
    """docker-compose.yml, interpolated from .env.example."""
    return compose.load()


@dataclass(frozen=True)
class Acl:
    """One line of ops/kafka/acls.conf."""

    user: str
    operations: frozenset[str]
    kind: str
    name: str
    pattern: str


def acls() -> list[Acl]:
    """ops/kafka/acls.conf, as setup.sh reads it."""
    lines = []
    for line in (KAFKA_OPS / "acls.conf").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            user, operations, kind, name, *pattern = fields
            lines.append(
                Acl(user, frozenset(operations.split(",")), kind, name, (pattern or ["literal"])[0])
            )
    return lines


def db_user(service: dict[str, Any]) -> str | None:
    """The user of the service's SMSRX_DATABASE_URL, if it has one."""
    url = compose.environment(service).get("SMSRX_DATABASE_URL")
    return None if url is None else urlsplit(url).username


def scram_users(env: dict[str, str]) -> dict[str, str]:
    """User -> password of the SCRAM_PASSWORD_<USER> variables, named as the scripts name them."""
    return {
        name.removeprefix("SCRAM_PASSWORD_").lower().replace("_", "-"): value
        for name, value in env.items()
        if name.startswith("SCRAM_PASSWORD_")
    }


def brokers(project: compose.Project) -> dict[str, dict[str, str]]:
    """The Kafka nodes' environments."""
    return {
        name: compose.environment(service)
        for name, service in project.services.items()
        if re.fullmatch(r"kafka-\d+", name)
    }


# --- PostgreSQL ------------------------------------------------------------------------


def test_no_service_logs_in_to_postgres_as_the_owner(project: compose.Project) -> None:
    """Each service's database URL names its own login, a member of its role; only migrate and db-logins use the owner."""
    owner = compose.environment(project.services["postgres"])["POSTGRES_USER"]
    logins = dict(
        re.findall(r"\\set login (\S+)\n\\set group (\S+)", read(POSTGRES_OPS / "logins.psql"))
    )
    groups_made = set(re.findall(r"'(smsrx_[a-z_]+)'", read(MIGRATION).split("LOOP")[0]))
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


# --- the scripts, run ------------------------------------------------------------------


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def recorder(folder: Path, name: str, body: str = "") -> Path:
    """An executable that appends its arguments, one per line, then a blank line, to name.log."""
    path = folder / name
    path.write_text(
        "#!/usr/bin/env bash\n"
        f'for a in "$@"; do printf "%s\\n" "$a"; done >> "{folder}/{name}.log"\n'
        f'echo >> "{folder}/{name}.log"\n{body}'
    )
    path.chmod(0o755)
    return path


def calls(folder: Path, name: str) -> list[list[str]]:
    """What a recorder was called with, call by call."""
    log = folder / f"{name}.log"
    text = log.read_text() if log.exists() else ""
    return [call.splitlines() for call in text.split("\n\n") if call.strip()]


def render(env: dict[str, str]) -> str:
    """server.properties as the apache/kafka image renders it from KAFKA_* variables."""
    skipped = {
        "KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME",
    }  # fmt: skip
    lines = []
    for name in sorted(env):
        if name.startswith("KAFKA_") and name not in skipped:
            key = name.replace("KAFKA_", "").lower().replace("_", ".")
            lines.append(f"{key.replace('...', '-').replace('..', '_')}={env[name]}")
    return "\n".join(lines) + "\n"


def test_start_script_formats_once_with_every_scram_user(
    project: compose.Project, tmp_path: Path
) -> None:
    """start.sh formats a new node with the image's own server.properties and every SCRAM user, once, then runs the image without the passwords."""
    env = compose.environment(project.services["kafka-1"])
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    secrets.mkdir()
    data.mkdir()
    (secrets / "keystore.password").write_text("storepass")
    recorder(tmp_path, "kafka-storage.sh", f'cp "$6" "{tmp_path}/format.properties"\n')
    recorder(tmp_path, "run", f'env | grep -c "^SCRAM_PASSWORD_" > "{tmp_path}/left"; true\n')
    run_env = {
        "PATH": os.environ["PATH"],
        **env,
        "KAFKA_LOG_DIRS": str(data),
        "STORAGE_TOOL": str(tmp_path / "kafka-storage.sh"),
        "IMAGE_RUN": str(tmp_path / "run"),
        "SECRETS": str(secrets),
        "RENDERED": str(tmp_path / "rendered.properties"),
        "PROBE": str(tmp_path / "probe.properties"),
    }
    for _ in range(2):
        result = subprocess.run(
            ["bash", str(KAFKA_OPS / "start.sh")],
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        (data / "meta.properties").touch()  # what a real format leaves
    [format_call] = calls(tmp_path, "kafka-storage.sh")
    assert format_call[:6] == [
        "format",
        "--ignore-formatted",
        "--cluster-id",
        env["CLUSTER_ID"],
        "-c",
        str(tmp_path / "rendered.properties"),
    ]
    scram = format_call[6:]
    assert scram[0::2] == ["--add-scram"] * (len(scram) // 2)
    assert sorted(scram[1::2]) == sorted(
        f"SCRAM-SHA-512=[name={user},password={password}]"
        for user, password in scram_users(env).items()
    )
    expected = render(
        {
            **env,
            "KAFKA_LOG_DIRS": str(data),
            "KAFKA_SSL_KEYSTORE_PASSWORD": "storepass",
            "KAFKA_SSL_KEY_PASSWORD": "storepass",
        }
    )
    assert read(tmp_path / "format.properties") == expected
    assert "listener.name.client.scram-sha-512.sasl.jaas.config=" in expected
    assert not (tmp_path / "rendered.properties").exists()
    assert read(tmp_path / "left").strip() == "0"  # the broker never sees the passwords
    probe = read(tmp_path / "probe.properties")
    assert "security.protocol=SSL" in probe and "ssl.keystore.password=storepass" in probe


def test_setup_script_sets_every_password_and_every_acl(
    project: compose.Project, tmp_path: Path
) -> None:
    """setup.sh, as admin over SASL_SSL, sets each SCRAM user's password and adds each ACL line with the topic prefix."""
    env = compose.environment(project.services["kafka-setup"])
    config_copy = f'cp "$4" "{tmp_path}/admin.properties"\n'
    recorder(tmp_path, "kafka-configs.sh", config_copy)
    recorder(tmp_path, "kafka-acls.sh")
    result = subprocess.run(
        ["bash", str(KAFKA_OPS / "setup.sh")],
        env={
            **env,
            "PATH": os.environ["PATH"],
            "KAFKA_BIN": str(tmp_path),
            "SMSRX_TOPIC_PREFIX": "staging.",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "change-me" not in result.stdout + result.stderr
    admin = read(tmp_path / "admin.properties")
    assert "security.protocol=SASL_SSL" in admin and "sasl.mechanism=SCRAM-SHA-512" in admin
    assert f'password="{env["SCRAM_PASSWORD_ADMIN"]}"' in admin
    assert f"ssl.truststore.location={env['CA_FILE']}" in admin
    users = {
        call[call.index("--entity-name") + 1]: call[call.index("--add-config") + 1]
        for call in calls(tmp_path, "kafka-configs.sh")
    }
    assert users == {
        u: f"SCRAM-SHA-512=[iterations=8192,password={p}]" for u, p in scram_users(env).items()
    }
    added = calls(tmp_path, "kafka-acls.sh")
    assert len(added) == len(acls())
    for call, acl in zip(added, acls(), strict=True):
        assert call[call.index("--allow-principal") + 1] == f"User:{acl.user}"
        assert {call[i + 1] for i, a in enumerate(call) if a == "--operation"} == acl.operations
        assert call[call.index(f"--{acl.kind}") + 1] == f"staging.{acl.name}"
        assert call[call.index("--resource-pattern-type") + 1] == acl.pattern
        assert "--add" in call and call[call.index("--bootstrap-server") + 1] == env["BOOTSTRAP"]


def test_certs_script_issues_certificates_the_clients_verify(tmp_path: Path) -> None:
    """certs.sh makes a CA and a keystore per broker, once; a client with the CA file verifies each broker by its name."""
    if shutil.which("keytool") is None:
        pytest.skip("keytool (Java) not installed")
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        pkcs12,
    )

    dirs = {name: tmp_path / name for name in ("CA_KEY_DIR", "BROKER_DIR", "CA_DIR")}
    for folder in dirs.values():
        folder.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in dirs.items()},
        "BROKER_UID": str(os.getuid()),
    }
    script = ["bash", str(KAFKA_OPS / "certs.sh")]
    subprocess.run(script, env=env, capture_output=True, check=True, timeout=120)
    made = {p.name: p.read_bytes() for p in dirs["BROKER_DIR"].iterdir()}
    assert set(made) == {"kafka-1.p12", "kafka-2.p12", "kafka-3.p12", "keystore.password", "ca.pem"}
    assert {p.name for p in dirs["CA_DIR"].iterdir()} == {"ca.pem"}  # no key for the clients
    subprocess.run(script, env=env, capture_output=True, check=True, timeout=120)
    assert {p.name: p.read_bytes() for p in dirs["BROKER_DIR"].iterdir()} == made  # left alone

    client = security_options(
        Settings.from_env(
            {
                "SMSRX_KAFKA_SECURITY_PROTOCOL": "SSL",
                "SMSRX_KAFKA_CA_FILE": str(dirs["CA_DIR"] / "ca.pem"),
            }
        )
    )["ssl_context"]
    password = made["keystore.password"]
    for broker in ("kafka-1", "kafka-2", "kafka-3"):
        key, cert, _ = pkcs12.load_key_and_certificates(made[f"{broker}.p12"], password)
        assert key is not None and cert is not None
        pem = tmp_path / f"{broker}.pem"
        pem.write_bytes(
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            + cert.public_bytes(Encoding.PEM)
        )
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(pem)
        assert asyncio.run(handshake(server, client, broker)) == f"CN={broker}"
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(handshake(server, client, "kafka-9"))


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A TLS handshake on loopback, the client checking the server is ``name``; the peer's subject."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=name
        )
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        writer.close()
        return f"CN={subject['commonName']}"
    finally:
        listener.close()
        await listener.wait_closed()
