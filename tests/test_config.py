"""Configuration: defaults from config.yaml, file and environment overrides, fail-fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.config import ConfigError, load_config


def test_defaults_match_the_documented_file() -> None:
    config = load_config(env={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.store == "sqlite:///data/proctor.db" and config.bus == "memory"
    assert config.clips_dir == Path("data/clips")
    assert config.pipeline.analysis_fps == 5.0
    kinds = [rule.kind for rule in config.flags.rules]
    assert {"face_absent", "multiple_faces", "head_turned", "phone_detected",
            "tab_hidden", "paste"} <= set(kinds)


def test_file_then_environment_override(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("server:\n  port: 9100\npipeline:\n  analysis_fps: 10\n")
    config = load_config(extra, env={"PROCTOR_SERVER__PORT": "9200",
                                     "PROCTOR_RTC__ICE_HOST_ADDRESSES": "127.0.0.1,::1",
                                     "PROCTOR_AUTH__API_KEYS": '["a", "b"]',
                                     "UNRELATED": "x"})
    assert config.server.port == 9200  # the environment wins over the file
    assert config.pipeline.analysis_fps == 10.0  # the file wins over the defaults
    assert config.rtc.ice_host_addresses == ("127.0.0.1", "::1")
    assert config.auth.api_keys == ("a", "b")
    assert config.server.host == "127.0.0.1"  # untouched keys keep their defaults


@pytest.mark.parametrize(("env", "key"), [
    ({"PROCTOR_SERVER__PORT": "eighty"}, "server.port"),
    ({"PROCTOR_SERVER__PORTT": "1"}, "server.portt"),
    ({"PROCTOR_PIPELINE__ANALYSIS_FPS": "0"}, "pipeline.analysis_fps"),
    ({"PROCTOR_PIPELINE__WORKERS": "-2"}, "pipeline.workers"),
    ({"PROCTOR_DETECTORS__FACES__MODEL": "huge"}, "detectors.faces.model"),
    ({"PROCTOR_DETECTORS__FACES__ENABLED": "maybe"}, "detectors.faces.enabled"),
    ({"PROCTOR_STORE": "mysql://x"}, "store"),
    ({"PROCTOR_BUS": "kafka://x"}, "bus"),
    ({"PROCTOR_CLIPS": "s3://bucket"}, "clips"),
])
def test_bad_values_name_their_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value)


def test_bad_rule_rows_name_their_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flags:\n  rules:\n    - {kind: face_absent, signal: face_count, op: '~',"
                   " moderate: {threshold: 1, seconds: 3}}\n")
    with pytest.raises(ConfigError, match=r"flags\.rules\[0\]\.op"):
        load_config(bad, env={})
    missing = tmp_path / "missing.yaml"
    missing.write_text("flags:\n  rules:\n    - {kind: face_absent, signal: face_count}\n")
    with pytest.raises(ConfigError, match=r"flags\.rules\[0\]"):
        load_config(missing, env={})


def test_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, env={})


@pytest.mark.parametrize(("key", "value"), [("DARK_LUMA", "300"), ("FLAT_EDGES", "2"),
                                            ("FROZEN_MAX_CHANGE", "-1")])
def test_camera_values_are_checked(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={f"PROCTOR_DETECTORS__CAMERA__{key}": value})
    assert caught.value.key == f"detectors.camera.{key.lower()}"
