"""The operations files, checked without a Docker engine or a running stack: here
docker-compose.yml and the Dockerfile.

docker-compose.yml is read as Compose reads it (tests/ops/compose.py); every file and
command it names must exist in the repository. The Prometheus rules and the Grafana
dashboards are checked in test_ops_files_monitoring.py.
"""

from __future__ import annotations

import re
import tomllib
from graphlib import TopologicalSorter

import pytest
import yaml

from smsrx.cli import build_parser
from smsrx.settings import VARIABLES
from tests.ops import compose
from tests.ops.stack import OPS

ROOT = compose.ROOT
METRICS_PORT_VARIABLE = {
    "receiver": "SMSRX_RECEIVER_METRICS_PORT",
    "status-projection": "SMSRX_STATUS_PROJECTION_METRICS_PORT",
    "analytics": "SMSRX_ANALYTICS_METRICS_PORT",
    "subscriptions": "SMSRX_SUBSCRIPTIONS_METRICS_PORT",
    "inbound": "SMSRX_INBOUND_METRICS_PORT",
    "poller": "SMSRX_POLLER_METRICS_PORT",
    "prune": "SMSRX_PRUNE_METRICS_PORT",
}


def smsrx_services(project: compose.Project) -> dict[str, dict]:
    """The services that run the smsrx image."""
    return {name: s for name, s in project.services.items() if "build" in s}


def one_shot(service: dict) -> bool:
    """A job that runs to completion (migrate, topics)."""
    return service.get("restart") == "no"


def role(name: str, service: dict) -> str:
    """receiver, status-projection, analytics, inbound, subscriptions, prune (or a one-shot's command)."""
    command = service["command"]
    if command[0] == "consumer" or command[:2] == ["db", "prune"]:
        return command[1]
    return "subscriptions" if command[0] == "subscriptions" else command[0]


# --- docker-compose.yml ------------------------------------------------------------------


def test_compose_has_every_service_of_the_deployment(project: compose.Project) -> None:
    """Kafka x3 and their certificates and ACLs, PostgreSQL, migrations, logins, topics, 2 receivers, the three workers, the reconciler, the prune, Prometheus, Grafana and its watchdog."""
    assert set(project.services) == {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "kafka-certs",
        "kafka-setup",
        "postgres",
        "migrate",
        "db-logins",
        "grafana-watchdog",
        "topics",
        "receiver-1",
        "receiver-2",
        "status-projection",
        "analytics",
        "inbound",
        "poller",
        "subscriptions",
        "prune",
        "prometheus",
        "grafana",
    }
    # The poller exits 2 without a carrier's credentials: only `--profile polling` starts it,
    # and nothing that always starts waits for it.
    profiled = {n: s["profiles"] for n, s in project.services.items() if s.get("profiles")}
    assert profiled == {"poller": ["polling"]}
    for name, service in project.services.items():
        assert not set(compose.depends_on(service)) & set(profiled), name


def test_every_service_has_a_healthcheck_and_dependents_wait_for_it(
    project: compose.Project,
) -> None:
    """Long-running services have a healthcheck; dependents wait for service_healthy (or for a one-shot to complete)."""
    services = project.services
    for name, service in services.items():
        if one_shot(service):
            assert "healthcheck" not in service, f"{name}: a one-shot job exits; nothing to probe"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert {"interval", "timeout", "retries"} <= set(check), name
    for name, service in services.items():
        for dep, condition in compose.depends_on(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = (
                "service_completed_successfully" if one_shot(services[dep]) else "service_healthy"
            )
            assert condition == wanted, f"{name} -> {dep}: {condition}"
    graph = {name: set(compose.depends_on(s)) for name, s in services.items()}
    list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


def test_app_services_wait_for_the_cluster_database_migrations_and_topics(
    project: compose.Project,
) -> None:
    """Receivers and workers start only once Kafka and PostgreSQL are healthy and migrate/topics completed."""
    for name, service in smsrx_services(project).items():
        if one_shot(service) or name in ("subscriptions", "prune"):
            continue
        assert set(compose.depends_on(service)) >= {
            "kafka-1",
            "kafka-2",
            "kafka-3",
            "postgres",
            "migrate",
            "topics",
        }, name
    for name in ("subscriptions", "prune"):  # no Kafka: the database and its logins only
        assert set(compose.depends_on(project.services[name])) >= {"postgres", "migrate"}, name
    assert set(compose.depends_on(project.services["grafana"])) >= {"prometheus", "postgres"}


def test_every_smsrx_command_exists(project: compose.Project) -> None:
    """Each service's command, and the image's entrypoint, are real `smsrx` commands."""
    parser = build_parser()
    for name, service in smsrx_services(project).items():
        try:
            parser.parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"{name}: `smsrx {' '.join(service['command'])}` is not a smsrx command")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["smsrx"]' in dockerfile and "smsrx" in scripts


def test_healthcheck_probes_are_valid_and_hit_the_right_ports(project: compose.Project) -> None:
    """The smsrx healthchecks are valid Python, probing /readyz (receivers) or the process's own /metrics port."""
    for name, service in smsrx_services(project).items():
        if one_shot(service):
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], f"{name} healthcheck", "exec")
        env = compose.environment(service)
        kind = role(name, service)
        if kind == "receiver":
            assert f":{env['SMSRX_RECEIVER_PORT']}/readyz" in test[3], name
        else:
            assert f":{env[METRICS_PORT_VARIABLE[kind]]}/metrics" in test[3], name


def test_every_referenced_file_exists_and_config_is_mounted_read_only(
    project: compose.Project,
) -> None:
    """Bind mounts, the build context and the Dockerfile exist in the repository; config mounts are read-only."""
    for name, service in project.services.items():
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name
        for source, target, mode in compose.bind_mounts(service):
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            assert mode == "ro", f"{name}: {source} -> {target} must be read-only"
        for volume in compose.named_volumes(service):
            assert volume in project.config["volumes"], f"{name}: volume {volume} not declared"
    mounts = {t: s for svc in project.services.values() for (s, t, _) in compose.bind_mounts(svc)}
    assert mounts["/etc/prometheus"] == "./ops/prometheus"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["/docker-entrypoint-initdb.d"] == "./ops/postgres/initdb"
    assert (ROOT / "ops/postgres/initdb/10-grafana-reader.sh").stat().st_mode & 0o111


def test_env_example_defines_every_variable_and_nothing_else(project: compose.Project) -> None:
    """Every ${VAR} in docker-compose.yml is in .env.example (or has a default); .env.example has no stray keys."""
    env = compose.read_env()
    assert project.used - set(env) - project.defaulted == set()
    assert set(env) - project.used == set()
    for secret in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_PG_PASSWORD"):
        with pytest.raises(compose.InterpolationError):
            compose.load({k: v for k, v in env.items() if k != secret})


def test_smsrx_settings_are_real_settings(project: compose.Project) -> None:
    """Every SMSRX_* variable the services set is a setting smsrx reads."""
    for name, service in smsrx_services(project).items():
        unknown = {k for k in compose.environment(service) if k.startswith("SMSRX_")} - set(
            VARIABLES
        )
        assert unknown == set(), name


def test_kafka_is_three_kraft_brokers_with_rf3_and_min_isr2(project: compose.Project) -> None:
    """Three combined broker/controller nodes in one KRaft quorum; topics get 3 replicas and min.insync.replicas=2."""
    brokers = {
        n: compose.environment(s)
        for n, s in project.services.items()
        if re.fullmatch(r"kafka-\d+", n)
    }
    assert len(brokers) == 3
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in brokers.items()}
    for name, env in brokers.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["CLUSTER_ID"] and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert f"CLIENT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    topics = project.services["topics"]
    assert topics["command"] == ["topics", "create"]
    assert compose.environment(topics)["SMSRX_TOPIC_REPLICATION"] == "3"
    for name, service in smsrx_services(project).items():
        bootstrap = compose.environment(service).get("SMSRX_KAFKA_BOOTSTRAP")
        if bootstrap is not None:
            assert set(bootstrap.split(",")) == {f"{b}:9092" for b in brokers}, name


def test_receivers_are_replicas_with_their_own_port_and_spool(project: compose.Project) -> None:
    """At least two receivers, each with its own host port and spool volume."""
    receivers = {n: s for n, s in smsrx_services(project).items() if s["command"] == ["receiver"]}
    assert len(receivers) >= 2
    ports = [p for s in receivers.values() for p in compose.host_ports(s)]
    spools = [
        v for s in receivers.values() for v in compose.named_volumes(s) if v.endswith("-spool")
    ]
    assert len(set(ports)) == len(receivers) and len(set(spools)) == len(receivers)
    every_port = [p for s in project.services.values() for p in compose.host_ports(s)]
    assert len(every_port) == len(set(every_port)), "two services publish the same host port"


def test_prometheus_scrapes_every_smsrx_process_on_its_metrics_port(
    project: compose.Project,
) -> None:
    """Each scrape target is a compose service's metrics port; every long-running smsrx service is scraped."""
    config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    scraped = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.split(":")
                scraped[host] = (job["job_name"], port)
    for name, service in smsrx_services(project).items():
        if one_shot(service):
            continue
        kind = role(name, service)
        env = compose.environment(service)
        assert scraped.get(name) == (f"smsrx-{kind}", env[METRICS_PORT_VARIABLE[kind]]), name
    assert set(scraped) <= set(project.services)


def test_dockerfile_copies_every_package_and_runs_unprivileged() -> None:
    """The Dockerfile copies each package pyproject installs, every COPY source exists, and it runs as a non-root user."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    sources = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources.update(line.split()[1:-1])
    for source in sources:
        assert (ROOT / source).exists() and source not in ignored, source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in sources, pattern
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
