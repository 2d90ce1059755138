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


def test_concurrency_is_sized_from_the_server_count():
    """rollout.max_concurrency_per_server x the servers in the pool bounds the trainer's client."""
    from types import SimpleNamespace

    from areal_mega.trainer.session import Session

    rc = load_config(RolloutConfig, overrides=["max_concurrency_per_server=32"])
    urls = [f"http://127.0.0.1:{3000 + i}" for i in range(5)]
    client = Session.client(SimpleNamespace(cfg=SimpleNamespace(rollout=rc), urls=urls))
    assert client.max_concurrency == 32 * 5
    assert Session.client(SimpleNamespace(cfg=SimpleNamespace(rollout=rc), urls=urls[:2])).max_concurrency == 64
    assert RolloutConfig().max_concurrency_per_server == 256
