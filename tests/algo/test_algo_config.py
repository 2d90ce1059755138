"""AlgoConfig: defaults are the AReaL v0.1 recipe; bad values raise errors naming the field."""
import pytest

from areal_mega.algo.config import AlgoConfig
from areal_mega.config import ConfigError, load_config


def test_defaults_are_areal_v01_recipe():
    cfg = AlgoConfig()
    assert (cfg.kl_coef, cfg.kl_in_reward, cfg.adv_norm, cfg.eps_clip) == (0.001, True, "batch", 0.2)
    assert (cfg.gamma, cfg.gae_lambda, cfg.max_ratio_cap, cfg.old_logprobs) == (1.0, 1.0, 5.0, "rollout")
    assert (cfg.reward_correct, cfg.reward_wrong, cfg.loss_agg) == (5.0, -5.0, "token_mean")


@pytest.mark.parametrize(
    "field,value",
    [
        ("kl_coef", -0.1),
        ("kl_estimator", "k4"),
        ("adv_norm", "whiten"),
        ("adv_eps", 0.0),
        ("gamma", 1.5),
        ("gae_lambda", -0.1),
        ("eps_clip", 0.0),
        ("eps_clip", 1.0),
        ("eps_clip_high", -0.2),
        ("dual_clip", 1.0),
        ("loss_agg", "seq_sum"),
        ("overlong", "drop"),
        ("max_ratio_cap", 0.5),
        ("old_logprobs", "server"),
        ("ppo_minibatches", 0),
        ("ppo_epochs", 0),
        ("reward_correct", -5.0),
        ("reward_wrong", float("nan")),
    ],
)
def test_bad_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"algo\.{field}"):
        AlgoConfig(**{field: value})


def test_qwen_zero_rewards_and_optional_fields_accepted():
    cfg = AlgoConfig(reward_correct=1.0, reward_wrong=0.0, kl_coef=0.0, dual_clip=3.0, eps_clip_high=0.28, max_ratio_cap=None)
    assert cfg.dual_clip == 3.0 and cfg.max_ratio_cap is None


def test_load_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "algo.yaml"
    path.write_text("kl_coef: 0.0\nadv_norm: group\nmax_ratio_cap: null\n")
    cfg = load_config(AlgoConfig, path, ["eps_clip_high=0.28", "ppo_minibatches=4"])
    assert isinstance(cfg, AlgoConfig)
    assert (cfg.kl_coef, cfg.adv_norm, cfg.max_ratio_cap, cfg.eps_clip_high, cfg.ppo_minibatches) == (
        0.0, "group", None, 0.28, 4,
    )
    path.write_text("loss_agg: sum\n")
    with pytest.raises(ConfigError, match=r"algo\.loss_agg"):
        load_config(AlgoConfig, path)


def test_algo_temperature_is_gone_the_trainer_divides_by_the_rollout_temperature(tmp_path):
    """One key per setting: the logit divisor is rollout.temperature (the sampling temperature)."""
    from areal_mega.trainer.config import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text("engine: {model_path: /m}\nalgo: {temperature: 0.6}\n")
    with pytest.raises(ConfigError, match=r"algo\.temperature"):
        load_config(RunConfig, path)
