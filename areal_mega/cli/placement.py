"""The arithmetic of launch/slurm.sbatch: the placement plan as shell variables, and the wait for servers.

    python -m areal_mega.cli.placement plan --config FILE --hosts H0 H1 ... [key=value ...]
        prints bash assignments (eval them): MODEL, BACKEND, SERVER_TP, MEM_FRACTION, API_KEY,
        BASE_PORT, GEN_HOSTS / GEN_GPUS / GEN_SERVERS (one entry per generation node: host,
        its CUDA_VISIBLE_DEVICES, servers on it), URLS (every server), TRAIN_HOSTS, TRAIN_NPROC.
    python -m areal_mega.cli.placement wait --timeout S [--pids P ...] URL ...
        polls each URL's /health until 200; exits non-zero naming the servers not up in S seconds,
        or at once when one of the server steps (`--pids`) has exited.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from areal_mega.cluster import PlacementError, plan_placement
from areal_mega.config import ConfigError, load_config


def _array(name: str, values) -> str:
    return f"{name}=({' '.join(shlex.quote(str(v)) for v in values)})"


def plan_shell(config: str, hosts: list[str], overrides: list[str]) -> str:
    """The bash assignments of the plan of run config `config` on `hosts`."""
    from areal_mega.trainer.config import RunConfig

    cfg = load_config(RunConfig, config, overrides)
    rc, par = cfg.rollout, cfg.engine.parallel
    plan = plan_placement(cfg.cluster, rc.tp_size, par.tp, par.pp, hosts)
    gen_nodes = sorted({s.node for s in plan.servers})
    per_node = {n: [s for s in plan.servers if s.node == n] for n in gen_nodes}
    lines = [
        f"MODEL={shlex.quote(cfg.engine.model_path)}",
        f"BACKEND={shlex.quote(rc.backend)}",
        f"SERVER_TP={rc.tp_size}",
        f"MEM_FRACTION={rc.mem_fraction}",
        f"API_KEY={shlex.quote(rc.api_key or '')}",
        f"BASE_PORT={cfg.cluster.server_base_port}",
        _array("GEN_HOSTS", [hosts[n] for n in gen_nodes]),
        _array("GEN_GPUS", [",".join(str(g) for s in per_node[n] for g in s.gpus) for n in gen_nodes]),
        _array("GEN_SERVERS", [len(per_node[n]) for n in gen_nodes]),
        _array("URLS", [s.url for s in plan.servers]),
        _array("TRAIN_HOSTS", plan.train_hosts),
        f"TRAIN_NPROC={plan.nproc_per_node}",
    ]
    return "\n".join(lines)


def wait_healthy(urls: list[str], timeout_s: float, pids: list[int] = (), interval_s: float = 1.0) -> None:
    """Return once every `urls[i]/health` answers 200; raise RuntimeError naming the others after `timeout_s`,
    or as soon as a process in `pids` has exited."""
    import requests

    pending = list(urls)
    deadline = time.monotonic() + timeout_s
    while pending:
        for pid in pids:
            if not _running(pid):
                raise RuntimeError(f"a server step (pid {pid}) exited before its servers were healthy; "
                                   f"still waiting for {pending}")
        up = []
        for url in pending:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    up.append(url)
            except requests.RequestException:
                pass
        pending = [u for u in pending if u not in up]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"servers not healthy after {timeout_s:.0f} s: {pending}")
        if pending:
            time.sleep(interval_s)


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an exited child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m areal_mega.cli.placement", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="print the plan as bash assignments")
    p.add_argument("--config", required=True)
    p.add_argument("--hosts", nargs="+", required=True)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    w = sub.add_parser("wait", help="wait for servers' /health")
    w.add_argument("--timeout", type=float, default=900.0)
    w.add_argument("--pids", type=int, nargs="*", default=[])
    w.add_argument("urls", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "plan":
            print(plan_shell(args.config, args.hosts, args.overrides))
        else:
            wait_healthy(args.urls, args.timeout, args.pids)
    except (ConfigError, PlacementError, RuntimeError) as e:
        sys.exit(f"placement: {e}")


if __name__ == "__main__":
    main()
