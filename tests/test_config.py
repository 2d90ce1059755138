"""Engine config errors name the key and the file: typos, wrong types, bad values, impossible layouts."""
import pytest

from areal_mega.config import ConfigError, load_config
from areal_mega.engine.config import EngineConfig, ParallelConfig
from areal_mega.models.hf_config import read_hf_dims, transformer_config


def _yaml(tmp_path, text: str):
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    return path


def test_valid_file_and_override(tmp_path):
    path = _yaml(tmp_path, "model_path: /m\nparallel:\n  tp: 2\noptimizer:\n  lr: 1.0e-5\n")
    cfg = load_config(EngineConfig, path, ["parallel.pp=2"])
    assert (cfg.model_path, cfg.parallel.tp, cfg.parallel.pp, cfg.optimizer.lr) == ("/m", 2, 2, 1e-5)
    assert isinstance(cfg.parallel, ParallelConfig)


def test_typo_names_key_and_file(tmp_path):
    path = _yaml(tmp_path, "parallel:\n  tpp: 2\n")
    with pytest.raises(ConfigError, match=r"engine\.yaml.*parallel\.tpp"):
        load_config(EngineConfig, path)


def test_typo_on_command_line(tmp_path):
    with pytest.raises(ConfigError, match=r"command line.*optimizer\.learning_rate"):
        load_config(EngineConfig, None, ["optimizer.learning_rate=1"])


def test_wrong_type_names_key_and_file(tmp_path):
    path = _yaml(tmp_path, "optimizer:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"engine\.yaml.*optimizer\.lr"):
        load_config(EngineConfig, path)


def test_bad_value_names_key_and_file(tmp_path):
    path = _yaml(tmp_path, "optimizer:\n  lr_schedule: linear\n")
    with pytest.raises(ConfigError, match=r"engine\.yaml.*optimizer\.lr_schedule"):
        load_config(EngineConfig, path)
    path = _yaml(tmp_path, "parallel:\n  tp: 0\n")
    with pytest.raises(ConfigError, match=r"engine\.yaml.*parallel\.tp"):
        load_config(EngineConfig, path)


def test_tp_times_pp_must_divide_world_size():
    assert ParallelConfig(tp=2, pp=2).dp(8) == 2
    with pytest.raises(ValueError, match=r"parallel\.tp \* parallel\.pp = 4 .*world size 6"):
        ParallelConfig(tp=2, pp=2).dp(6)


def test_heads_and_layers_must_divide(tiny_qwen2_dir):
    import torch

    dims = read_hf_dims(tiny_qwen2_dir)  # 4 heads, 2 KV heads, 2 layers
    with pytest.raises(ValueError, match=r"parallel\.tp=4 .*num_key_value_heads=2"):
        transformer_config(dims, 4, 1, torch.float32)
    with pytest.raises(ValueError, match=r"parallel\.tp=3 .*num_attention_heads=4"):
        transformer_config(dims, 3, 1, torch.float32)
    with pytest.raises(ValueError, match=r"parallel\.pp=4 .*num_hidden_layers=2"):
        transformer_config(dims, 1, 4, torch.float32)
