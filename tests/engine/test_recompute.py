"""Activation recomputation (engine.recompute) changes memory, not numbers: one TP=2 step with full or
selective recomputation gives the loss, gradient norm and updated weights of the step without it."""
import pytest
import torch

from areal_mega.engine.config import RecomputeConfig
from tests.distributed import torchrun

WORKER = "tests.engine.worker_memory"


@pytest.fixture(scope="module")
def baseline(tiny_qwen2_dir, tmp_path_factory):
    return torchrun(WORKER, 2, ["--model", str(tiny_qwen2_dir)], tmp_path_factory.mktemp("none"))


@pytest.mark.multirank
@pytest.mark.parametrize("args", [["--recompute", "full"], ["--recompute", "full", "--recompute-method", "block",
                                                           "--recompute-num-layers", "2"],
                                  ["--recompute", "selective"]])
def test_recompute_gives_the_same_step(args, baseline, tiny_qwen2_dir, tmp_path):
    run = torchrun(WORKER, 2, ["--model", str(tiny_qwen2_dir), *args], tmp_path)
    assert baseline[0]["checkpoint_calls"] == 0 and run[0]["checkpoint_calls"] > 0  # it did recompute
    assert run[0]["loss"] == pytest.approx(baseline[0]["loss"], abs=1e-6)
    assert run[0]["grad_norm"] == pytest.approx(baseline[0]["grad_norm"], rel=1e-6)
    want = {k: v for r in baseline for k, v in r["weights_after_step"].items()}
    got = {k: v for r in run for k, v in r["weights_after_step"].items()}
    assert want.keys() == got.keys() and len(want) > 10
    for name in want:
        assert (torch.tensor(got[name]) - torch.tensor(want[name])).abs().max().item() <= 1e-6, name


def test_recompute_config_names_bad_keys():
    for kwargs, key in (({"granularity": "some"}, "granularity"), ({"method": "all"}, "method"),
                        ({"num_layers": 0}, "num_layers")):
        with pytest.raises(ValueError, match=rf"engine\.recompute\.{key}"):
            RecomputeConfig(**kwargs)
