"""Fixtures of tests/ops/: docker-compose.yml as Compose reads it, once per module."""

from __future__ import annotations

import pytest

from tests.ops import compose


@pytest.fixture(scope="module")
def project() -> compose.Project:
    """docker-compose.yml, interpolated from .env.example."""
    return compose.load()
