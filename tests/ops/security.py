"""What the compose security checks share (tests/ops/test_compose_security*.py): the
Kafka scripts' folder, the ACL lines of ops/kafka/acls.conf, the SCRAM users and the Kafka
nodes of docker-compose.yml."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.ops import compose

KAFKA_OPS = compose.ROOT / "ops" / "kafka"


def read(path: Path) -> str:
    """A file of the repository, as text."""
    return path.read_text(encoding="utf-8")


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
