"""Tests for autoscaler.config: the process's environment, each error under its variable."""

from __future__ import annotations

import pytest

from autoscaler.config import EngineConfig, ProcessConfig
from shared.envconfig import ConfigError


def test_engine_config_from_env_names_the_variable() -> None:
    cfg = EngineConfig.from_env({"AUTOSCALER_STAT_PORT": "18080"}, {"stable-window": "6s"})
    assert cfg.stat_port == 18080 and cfg.metrics_port == 9090
    assert cfg.autoscaler.stable_window == 6.0
    with pytest.raises(ConfigError, match="AUTOSCALER_METRICS_PORT"):
        EngineConfig.from_env({"AUTOSCALER_METRICS_PORT": "x"})
    with pytest.raises(ConfigError, match="stable-window"):
        EngineConfig.from_env({}, {"stable-window": "1s"})


def test_process_config_requires_the_lease_identity() -> None:
    cfg = ProcessConfig.from_env({"POD_NAME": "autoscaler-0", "POD_IP": "10.0.0.7"})
    assert cfg.identity == "autoscaler-0_10.0.0.7"
    assert cfg.system_namespace == "knative-serving" and cfg.engine.stat_port == 8080
    for missing in ("POD_NAME", "POD_IP"):
        env = {"POD_NAME": "autoscaler-0", "POD_IP": "10.0.0.7", missing: ""}
        with pytest.raises(ConfigError, match=f"^{missing}: required"):
            ProcessConfig.from_env(env)
