"""The quickstart's tiny model (launch/make_tiny_model.py) and its noisy-teacher SFT warm start, each built
once for the trainer tests."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed import run_train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("quickstart_model")
    subprocess.run([sys.executable, str(REPO / "launch/make_tiny_model.py"), str(d)], check=True, capture_output=True)
    return d


@pytest.fixture(scope="session")
def quickstart_sft(model_dir, tmp_path_factory):
    """configs/quickstart/sft.yaml as shipped (2 ranks, 960 steps, 50 held-out problems): its run dir, with the
    warm start in hf/. Shared by the synchronous and the asynchronous learning tests (the SFT is most of
    their cost)."""
    d = tmp_path_factory.mktemp("quickstart_sft")
    run_train(2, REPO / "configs/quickstart/sft.yaml",
              [f"engine.model_path={model_dir}", f"trainer.run_dir={d}", "trainer.eval_samples=50"], timeout=1200)
    return d
