"""Checkpoint/resume: 4 steps straight == 2 steps + save + new job + load + 2 steps."""
import pytest
import torch

from areal_mega.engine.checkpoint import complete_checkpoints, latest_checkpoint
from tests.distributed import torchrun

WORKER = "tests.engine.worker_checkpoint"


def _weights(results):
    merged = {}
    for r in results:
        merged.update(r["weights"])
    return merged


@pytest.mark.multirank
@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_resume_continues_the_same_run(tp, pp, tiny_qwen2_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--model", str(tiny_qwen2_dir), "--tp", str(tp), "--pp", str(pp), "--ckpt", str(ckpt), "--steps", "4"]
    straight = torchrun(WORKER, 2, [*common, "--save-at", "1", "2", "--keep-last", "1"], tmp_path / "straight")
    # keep-last 1: only step 2 is left, and `latest` names it
    assert [d.name for d in complete_checkpoints(ckpt)] == ["step_000002"]
    assert (ckpt / "latest").read_text() == "step_000002"
    # a crash mid-save leaves a .tmp directory (and a stale pointer); load must skip both
    junk = ckpt / "step_000003.tmp"
    junk.mkdir()
    (junk / "rank0_0_0.pt").write_bytes(b"half written")
    (ckpt / "latest").write_text("step_000003")
    assert latest_checkpoint(ckpt).name == "step_000002"

    resumed = torchrun(WORKER, 2, [*common, "--resume"], tmp_path / "resumed")
    for r in resumed:
        assert r["extra"] == {"step": 2, "weight_version": 2, "sampler": {"epoch": 0, "pos": 8}}
    losses_straight = straight[0]["losses"]
    assert len(losses_straight) == 4 and len(resumed[0]["losses"]) == 2
    assert losses_straight[2] != losses_straight[3]
    for a, b in zip(losses_straight[2:], resumed[0]["losses"]):
        assert abs(a - b) <= 1e-6, (losses_straight, resumed[0]["losses"])
    assert abs(straight[0]["lr"] - resumed[0]["lr"]) <= 1e-12
    w_straight, w_resumed = _weights(straight), _weights(resumed)
    assert w_straight.keys() == w_resumed.keys() and len(w_straight) > 10
    for name in w_straight:
        diff = (torch.tensor(w_straight[name]) - torch.tensor(w_resumed[name])).abs().max().item()
        assert diff <= 1e-6, (name, diff)


@pytest.mark.multirank
def test_resume_at_another_layout_names_the_keys(tiny_qwen2_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    common = ["--model", str(tiny_qwen2_dir), "--ckpt", str(ckpt)]
    torchrun(WORKER, 2, [*common, "--tp", "2", "--steps", "1", "--save-at", "1"], tmp_path / "save")
    with pytest.raises(AssertionError, match=r"parallel\.tp=2 parallel\.pp=1.*parallel\.tp=1 parallel\.pp=1"):
        torchrun(WORKER, 1, [*common, "--steps", "2", "--resume"], tmp_path / "load")


@pytest.mark.multirank
@pytest.mark.parametrize("save_dp,load_dp", [(2, 1), (1, 2)])
def test_resume_at_another_dp_size_continues_the_run(save_dp, load_dp, tiny_qwen2_dir, tmp_path):
    """The distributed optimizer's state is re-cut for the new DP ranks: steps 3-4 after a
    resume at another DP size equal the straight run's (DP layouts agree within 1e-5)."""
    ckpt = tmp_path / "ckpt"
    common = ["--model", str(tiny_qwen2_dir), "--ckpt", str(ckpt), "--steps", "4"]
    straight = torchrun(WORKER, save_dp, [*common, "--save-at", "2"], tmp_path / "straight")
    resumed = torchrun(WORKER, load_dp, [*common, "--resume"], tmp_path / "resumed")
    assert resumed[0]["extra"]["step"] == 2
    losses_straight, losses_resumed = straight[0]["losses"][2:], resumed[0]["losses"]
    assert len(losses_resumed) == 2
    for a, b in zip(losses_straight, losses_resumed):
        assert abs(a - b) <= 1e-5, (losses_straight, losses_resumed)
    w_straight, w_resumed = _weights(straight), _weights(resumed)
    assert w_straight.keys() == w_resumed.keys() and len(w_straight) > 10
    for name in w_straight:
        diff = (torch.tensor(w_straight[name]) - torch.tensor(w_resumed[name])).abs().max().item()
        assert diff <= 1e-5, (name, diff)


@pytest.mark.multirank
@pytest.mark.parametrize("distributed_optimizer", [True, False])
def test_resume_keeps_adam_state_when_step_is_in_param_groups(distributed_optimizer, tiny_qwen2_dir, tmp_path):
    """TE's / apex's FusedAdam keep `step` in param_groups, not per parameter: resume must
    still restore the step count and the moments (a resume that drops either trains
    differently: steps 3-4 would not equal the straight run's)."""
    ckpt = tmp_path / "ckpt"
    common = ["--model", str(tiny_qwen2_dir), "--ckpt", str(ckpt), "--steps", "4", "--fused-adam-layout"]
    if not distributed_optimizer:
        common.append("--no-distributed-optimizer")
    straight = torchrun(WORKER, 1, [*common, "--save-at", "2"], tmp_path / "straight")
    resumed = torchrun(WORKER, 1, [*common, "--resume"], tmp_path / "resumed")
    losses_straight, losses_resumed = straight[0]["losses"][2:], resumed[0]["losses"]
    assert len(losses_resumed) == 2
    for a, b in zip(losses_straight, losses_resumed):
        assert abs(a - b) <= 1e-6, (losses_straight, losses_resumed)
    w_straight, w_resumed = _weights(straight), _weights(resumed)
    for name in w_straight:
        diff = (torch.tensor(w_straight[name]) - torch.tensor(w_resumed[name])).abs().max().item()
        assert diff <= 1e-6, (name, diff)


def test_has_stepped_reads_both_adam_layouts():
    """torch's Adam keeps `step` per parameter, FusedAdam (stand-in) per param group."""
    from areal_mega.engine.checkpoint import has_stepped
    from tests.engine.fused_adam_layout import GroupStepAdam

    for cls in (torch.optim.AdamW, GroupStepAdam):
        p = torch.nn.Parameter(torch.ones(3))
        opt = cls([{"params": [p]}, {"params": []}], lr=0.1)
        assert not has_stepped(opt), cls
        p.grad = torch.ones(3)
        opt.step()
        assert has_stepped(opt), cls
