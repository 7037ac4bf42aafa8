"""docker-compose.yml read as Compose reads it, without a Docker engine.

YAML anchors and merge keys are resolved by the YAML loader; then every string is
interpolated from .env.example with Compose's rules (``$$``, ``${VAR}``, ``$VAR``,
``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``,
``${VAR:+alt}``, ``${VAR+alt}``), and every variable that was needed is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

_VAR = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def read_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


@dataclass
class Project:
    """The interpolated compose file, and what the interpolation needed."""

    config: dict[str, Any]
    used: set[str] = field(default_factory=set)
    """Every variable referenced."""
    defaulted: set[str] = field(default_factory=set)
    """Variables referenced with a default (so .env.example may omit them)."""

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        """Service name -> definition."""
        services: dict[str, dict[str, Any]] = self.config["services"]
        return services


def load(env: dict[str, str] | None = None) -> Project:
    """docker-compose.yml as Compose sees it with ``env`` (default: .env.example)."""
    values = read_env() if env is None else env
    project = Project(yaml.safe_load(COMPOSE.read_text()))

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        project.used.add(name)
        value = values.get(name)
        empty = not value
        if op in (":-", "-"):
            project.defaulted.add(name)
            return arg if (value is None or (op == ":-" and empty)) else value
        if op in (":?", "?"):
            if value is None or (op == ":?" and empty):
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if (value is not None and not (op == ":+" and empty)) else ""
        return value or ""

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _VAR.sub(one, node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    project.config = walk(project.config)
    return project


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as a dict of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each host-path volume (short syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        parts = volume.split(":")
        if parts[0].startswith((".", "/")):
            mounts.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return mounts


def named_volumes(service: dict[str, Any]) -> list[str]:
    """Named volumes the service mounts."""
    return [
        volume.split(":")[0]
        for volume in service.get("volumes") or []
        if not volume.split(":")[0].startswith((".", "/"))
    ]


def host_ports(service: dict[str, Any]) -> list[str]:
    """Published host ports ("ip:host:container" or "host:container")."""
    ports = []
    for spec in service.get("ports") or []:
        parts = str(spec).split(":")
        if len(parts) >= 2:
            ports.append(parts[-2])
    return ports
