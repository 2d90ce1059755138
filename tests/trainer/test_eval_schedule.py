"""The held-out evaluation runs once per scheduled step: when trainer.eval_every divides the last step, the
loop's evaluation is the final one (it used to run a second time after the loop)."""
import json
from pathlib import Path

import pytest

from tests.distributed import run_train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.multirank
def test_last_step_is_evaluated_once(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    # rollout_only: generation and evaluation without training, the cheapest run with both
    run_train(2, REPO / "configs/quickstart/rl.yaml", [
        f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", "trainer.stages=[{max_new_tokens: 8, steps: 2}]",
        "trainer.eval_every=2", "trainer.eval_samples=8", "trainer.eval_k=1", "trainer.export_hf=false",
        "trainer.rollout_only=true", "data.batch_size=2", "rollout.n_samples=2"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "eval/accuracy" in r]
    assert evals == [0, 2], f"evaluations at steps {evals}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["accuracy_after"] == rows[-1]["eval/accuracy"], summary
