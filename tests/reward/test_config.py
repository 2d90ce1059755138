"""The reward config: one key per setting; the removed duplicates are errors that name the key."""
from pathlib import Path

import pytest

from areal_mega.config import ConfigError, load_config
from areal_mega.reward import RewardConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key", ["correct_reward", "wrong_reward", "start_method"])
def test_removed_keys_are_errors_naming_the_key(tmp_path, key):
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: 1.0\n")
    with pytest.raises(ConfigError, match=f"{path}.*{key}"):
        load_config(RewardConfig, path)


def test_configs_use_only_the_algo_reward_values():
    hits = [str(p) for p in (ROOT / "configs").rglob("*.yaml")
            if "correct_reward" in p.read_text() or "wrong_reward" in p.read_text()]
    assert hits == []


def test_mode_and_checker_load(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("mode: eval\nchecker: builtin\nnum_workers: 1\n")
    cfg = load_config(RewardConfig, path)
    assert (cfg.mode, cfg.checker, cfg.num_workers) == ("eval", "builtin", 1)
    with pytest.raises(ConfigError, match="reward.checker"):
        load_config(RewardConfig, None, ["checker=sympy"])
