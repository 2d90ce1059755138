"""setup.py's requirements: a torch range that the CI pin (launch/test.sh) and SGLang's pin satisfy."""
import ast
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

import areal_mega.kernels

REPO = Path(__file__).resolve().parents[1]


def _setup_kwargs() -> dict:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords
            if kw.arg in ("install_requires", "extras_require")}


def _requirement(reqs: list[str], name: str) -> Requirement:
    found = [Requirement(r) for r in reqs if Requirement(r).name == name]
    assert len(found) == 1, (name, reqs)
    return found[0]


def test_torch_is_a_range_that_the_ci_pin_satisfies():
    torch_req = _requirement(_setup_kwargs()["install_requires"], "torch")
    pins = re.findall(r"torch==([0-9][0-9.]*)", (REPO / "launch/test.sh").read_text())
    assert pins, "launch/test.sh must install an exact CPU torch first"
    assert all(torch_req.specifier.contains(Version(p)) for p in pins), (torch_req, pins)
    assert not any(s.operator == "==" for s in torch_req.specifier), f"{torch_req}: a hard pin fights GPU images"
    # SGLang 0.5.23 (the .[gpu] extra) requires torch==2.14.1 (its wheel METADATA)
    assert torch_req.specifier.contains(Version("2.14.1"))
    lower = min(Version(s.version) for s in torch_req.specifier if s.operator == ">=")
    assert lower.release[:2] == areal_mega.kernels.MIN_TORCH, (lower, areal_mega.kernels.MIN_TORCH)
    assert not torch_req.specifier.contains(Version("2.7.1"))  # no torch.mm(out_dtype=...) before 2.8


def test_gpu_extra_installs_the_sglang_server_runtime_and_transformer_engine():
    gpu = _setup_kwargs()["extras_require"]["gpu"]
    sglang = _requirement(gpu, "sglang")
    assert [s.operator for s in sglang.specifier] == ["=="], "SGLang's protocol is matched to one version"
    te = _requirement(gpu, "transformer-engine")
    assert "pytorch" in te.extras and te.specifier, te
