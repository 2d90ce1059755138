"""Rollout and weight-sync configs: defaults load, bad values name the field."""
import pytest

from areal_mega.config import ConfigError, load_config
from areal_mega.rollout.config import RolloutConfig
from areal_mega.weight_sync.config import WeightSyncConfig


def test_defaults_and_overrides():
    cfg = load_config(RolloutConfig, overrides=["temperature=0.6", "urls=[http://a:1,http://b:2]"])
    assert cfg.sampling_params()["temperature"] == 0.6 and cfg.urls == ["http://a:1", "http://b:2"]
    assert load_config(WeightSyncConfig).resolved_backend() == "gloo"


@pytest.mark.parametrize("schema,override,field", [
    (RolloutConfig, "top_p=0", "rollout.top_p"),
    (RolloutConfig, "backend=trtllm", "rollout.backend"),
    (RolloutConfig, "n_samples=0", "rollout.n_samples"),
    (WeightSyncConfig, "pause_mode=later", "weight_sync.pause_mode"),
    (WeightSyncConfig, "master_port=70000", "weight_sync.master_port"),
])
def test_bad_values_name_the_field(schema, override, field):
    with pytest.raises(ConfigError, match=field):
        load_config(schema, overrides=[override])
