"""Shared fixtures: a real app on loopback with its own data directory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proctor.config import Config, load_config
from signaling.app import create_app

API_KEY = "test-api-key"


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    tree: dict[str, Any] = {
        "server": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [API_KEY]},
        # Every ICE candidate on loopback; a fixed session limit spares each test app the
        # start-up measurement (tests/test_capacity.py and test_admission.py cover auto).
        "rtc": {"ice_host_addresses": ["127.0.0.1"], "max_sessions": 16},
        "store": f"sqlite:///{tmp_path}/data/proctor.db",
        "clips": f"file://{tmp_path}/data/clips",
        # Test receivers listen on loopback, which webhooks refuse by default.
        "webhooks": {"allowed_networks": ["127.0.0.0/8"]},
    }
    for key, value in overrides.items():
        tree.setdefault(key, {}).update(value) if isinstance(value, dict) else tree.update(
            {key: value})
    return load_config(env={}, overrides=tree)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def client(config: Config,
                 aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
