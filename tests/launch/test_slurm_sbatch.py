"""launch/slurm.sbatch against stub `srun` / `scontrol` on PATH (and SLURM_* variables as Slurm sets them).

The stub srun appends its argv and environment to a JSONL file; for a server step
(`python -m areal_mega.rollout.launcher`) it answers /health on each planned port of the
step's --host, as the servers would, until the script kills it. Node names are 127.0.0.x,
so every "node" is reachable here and the servers' URLs are real.
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from areal_mega.platform.device import free_port

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]

SRUN = r'''#!{python}
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
argv = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"argv": argv, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\n")
if "areal_mega.rollout.launcher" in argv:
    opt = lambda k: argv[argv.index(k) + 1]
    host, base, n = opt("--host"), int(opt("--base-port")), int(opt("--num-servers"))
    if host == os.environ.get("STUB_DEAD_HOST"):
        sys.exit("stub: server failed to start")
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a):
            pass
    servers = [ThreadingHTTPServer((host, base + j), Health) for j in range(n)]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()
'''

SCONTROL = '''#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG.scontrol"
[[ "$1 $2" == "show hostnames" ]] || exit 2
for h in $STUB_HOSTS; do echo "$h"; done
'''


def _stubs(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN.format(python=sys.executable)), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir


def _run(tmp_path: Path, config_text: str, hosts=HOSTS, extra_env=None, args=()):
    bin_dir = _stubs(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(config_text)
    log = tmp_path / "srun.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STUB_LOG=str(log), STUB_HOSTS=" ".join(hosts),
               SLURM_JOB_NODELIST="127.0.0.[2-5]", SLURM_NNODES=str(len(hosts)), SLURM_JOB_ID="77",
               SLURM_GPUS_ON_NODE="4", SLURM_SUBMIT_DIR=str(REPO), LOG_DIR=str(tmp_path / "logs"),
               SERVER_START_TIMEOUT="60", **(extra_env or {}))
    proc = subprocess.run(["bash", str(REPO / "launch/slurm.sbatch"), str(config), *args], env=env,
                          capture_output=True, text=True, timeout=180)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _config(port: int, generation_nodes: int = 2) -> str:
    return ("engine: {model_path: /models/qwen, parallel: {tp: 2}}\n"
            "rollout: {backend: sglang, tp_size: 2, num_servers: 4, mem_fraction: 0.7}\n"
            f"cluster: {{generation_nodes: {generation_nodes}, server_base_port: {port}}}\n")


@pytest.fixture
def port():
    return free_port()


def test_servers_on_generation_nodes_then_torchrun_on_training_nodes(tmp_path, port):
    proc, calls = _run(tmp_path, _config(port), args=["trainer.save_every=7"])
    assert proc.returncode == 0, proc.stderr
    servers = sorted((c for c in calls if "areal_mega.rollout.launcher" in c["argv"]), key=lambda c: c["argv"][2])
    train = [c for c in calls if "torchrun" in c["argv"]]
    assert len(servers) == 2 and len(train) == 1 and len(calls) == 3
    for call, host in zip(servers, HOSTS[:2]):
        a = call["argv"]
        assert f"--nodelist={host}" in a and "--nodes=1" in a
        # every GPU of a generation node serves; 2 servers of tp 2 on ports base, base + 1
        assert a[a.index("env") + 1] == "CUDA_VISIBLE_DEVICES=0,1,2,3"
        opt = lambda k: a[a.index(k) + 1]  # noqa: E731
        assert (opt("--num-servers"), opt("--tp-size"), opt("--base-port"), opt("--host")) == ("2", "2", str(port), host)
        assert (opt("--backend"), opt("--model"), opt("--mem-fraction")) == ("sglang", "/models/qwen", "0.7")
    a = train[0]["argv"]
    assert "--nodelist=127.0.0.4,127.0.0.5" in a and "--nodes=2" in a
    t = a[a.index("torchrun"):]
    opt = lambda k: t[t.index(k) + 1]  # noqa: E731
    assert (opt("--nnodes"), opt("--nproc-per-node"), opt("--rdzv-endpoint")) == ("2", "4", "127.0.0.4:29500")
    assert opt("--rdzv-backend") == "c10d" and opt("--config") == str(tmp_path / "run.yaml")
    urls = ",".join(f"http://{h}:{port + j}" for h in HOSTS[:2] for j in range(2))
    assert f"rollout.urls=[{urls}]" in t and "cluster.nodes=4" in t and "cluster.gpus_per_node=4" in t
    assert t[-1] == "trainer.save_every=7"  # the user's overrides reach the trainer, last


def test_a_server_that_dies_stops_the_job_before_torchrun(tmp_path, port):
    proc, calls = _run(tmp_path, _config(port), extra_env={"STUB_DEAD_HOST": "127.0.0.3"})
    assert proc.returncode != 0
    assert "exited before its servers were healthy" in proc.stderr and f"http://127.0.0.3:{port}" in proc.stderr
    assert not [c for c in calls if "torchrun" in c["argv"]]


def test_an_impossible_layout_is_refused_before_any_srun(tmp_path, port):
    proc, calls = _run(tmp_path, _config(port, generation_nodes=4))
    assert proc.returncode != 0
    assert "cluster.generation_nodes=4 leaves no node to train (cluster.nodes=4)" in proc.stderr
    assert calls == []
