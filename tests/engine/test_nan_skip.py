"""A non-finite loss on any rank skips the update everywhere; the next step trains normally."""
import pytest

from tests.distributed import torchrun


@pytest.mark.multirank
def test_nan_loss_skips_step_on_all_ranks(tiny_qwen2_dir, tmp_path):
    for r in torchrun("tests.engine.worker_nan", 2, ["--model", str(tiny_qwen2_dir)], tmp_path):
        assert r["skipped"] == 1.0 and r["unchanged_after_nan"]
        assert r["next_step_skipped"] == 0.0 and r["next_step_moves"] and r["next_step_finite"]
        assert r["optimizer_steps"] == 1
