"""The scripts the Kafka containers run (ops/kafka/), run here for real with the image's
tools replaced by recorders, checked against docker-compose.yml (tests/ops/compose.py);
the certificates they issue are checked with a real TLS handshake.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from smsrx.kafka import security_options
from smsrx.settings import Settings
from tests.ops import compose
from tests.ops.security import KAFKA_OPS, acls, read, scram_users

# --- the scripts, run ------------------------------------------------------------------


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
