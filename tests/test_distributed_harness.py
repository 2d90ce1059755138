"""tests/distributed.py: a timed-out command is killed with everything it started."""
import os
import subprocess
import sys

import pytest

from tests.distributed import exits_within, run_group


def test_time_out_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    # a parent that starts a grandchild and waits, as torchrun waits on its ranks
    cmd = [sys.executable, "-c",
           "import subprocess, sys, time\n"
           f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
           f"open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
           "time.sleep(600)\n"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(cmd, dict(os.environ), timeout=5)
    child = int(pid_file.read_text())
    assert exits_within(child, 10), f"grandchild {child} outlived the time-out"


def test_returns_output_and_code():
    proc = run_group([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                     dict(os.environ), timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
