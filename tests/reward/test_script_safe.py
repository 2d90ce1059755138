"""math_equal / math_reward from a plain script (no __main__ guard), `python -c` and torchrun."""
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(r"""
    from areal_mega.reward import math_equal, math_reward
    print("RESULT", math_equal("\\frac{1}{2}", "0.5"), math_equal("3", "4"),
          math_reward("so \\boxed{12}", "12"), math_reward("no answer", "12"))
""")
WANT = "RESULT True False 5.0 -5.0"


def _run(cmd, cwd, timeout=180):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_plain_script_without_main_guard(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    assert WANT in _run([sys.executable, str(script)], tmp_path)


def test_python_dash_c(tmp_path):
    assert WANT in _run([sys.executable, "-c", SCRIPT], tmp_path)


def test_stdin_script_like_a_notebook(tmp_path):
    """A __main__ with no file (as in a notebook or REPL) must not be re-imported either."""
    out = subprocess.run([sys.executable, "-"], input=SCRIPT, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert WANT in out.stdout


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_under_torchrun(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", "0", str(script)]
    assert WANT in _run(cmd, tmp_path, timeout=300)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P needs 3.11")
def test_script_next_to_a_module_that_shadows_sympy(tmp_path):
    """The workers do not put the caller's directory on sys.path (a user's sympy.py must not break them)."""
    (tmp_path / "sympy.py").write_text("raise ImportError('the user shadowed sympy')\n")
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    assert WANT in _run([sys.executable, str(script)], tmp_path)
