"""The quickstart's tiny model (launch/make_tiny_model.py), built once for the trainer tests."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("quickstart_model")
    subprocess.run([sys.executable, str(REPO / "launch/make_tiny_model.py"), str(d)], check=True, capture_output=True)
    return d
