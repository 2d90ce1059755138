"""Synchronous vs asynchronous RL (trainer.async_rollout, eta = 1, 2, 4) vs TRL's GRPOTrainer on the
quickstart workload, one run, one warm start (the quickstart's SFT, configs/quickstart/sft.yaml, through
benchmarks/bench_rl.py; or BENCH_RL_SFT=DIR to reuse an HF export).

Each of ours runs `configs/quickstart/rl.yaml` for N steps from the same SFT export with one
reference server; the asynchronous runs train with the decoupled objective (algo.objective=decoupled,
old_logprobs=recompute), as AReaL's asynchronous recipe does. Figures per run: steady seconds per
optimizer step ((wall at N - wall at 1) / (N - 1)), samples/s (prompts x n per step over that), the
idle fraction of each side (sync: the trainer waits through the rollout, the server idles through
logprobs + train + sync; async: the stream's own clocks, async/trainer_wait_fraction and
async/generation_idle_fraction; TRL, one process: it trains while nothing generates and the
reverse), mean and max staleness, held-out accuracy of the final export after the same number of
samples (bench_rl's measure: Pass@1 over 4 samples at the rollout temperature, and greedy, on the
200 held-out problems), and peak RSS of the process tree. TRL: bench_rl's GRPOTrainer child on the
same batch, 2 threads.

`python -m benchmarks.run async_pinned` (benchmarks/bench_async_pinned.py) runs the same set with
generation and training on one core each: a fresh reference server per run on core 0 (`taskset -c
0`) and the trainer on core 1 (`taskset -c 1`, one rank), so neither can take the other's core; TRL
keeps both cores (it has one process). Its outputs go to outputs/bench_async_pinned, so
BENCH_RL_SFT=outputs/bench_async/sft/hf reuses the first run's warm start.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_rl import (
    BATCH,
    EVAL_K,
    ROOT,
    _accuracies,
    _env,
    _run_tree,
    _sft,
    _steady_seconds_per_step,
    _torchrun,
    _trl,
    heldout_accuracy,
)

ETAS = (1, 2, 4)
ASYNC = ["trainer.async_rollout=true", "algo.old_logprobs=recompute", "algo.objective=decoupled"]
SAMPLES_PER_STEP = BATCH["prompts"] * BATCH["n_samples"]


def _ours(work: Path, sft_dir: Path, steps: int, name: str, overrides: list[str], prefix: list[str] = (),
          nproc: int = 2) -> dict:
    from areal_mega.metrics import read_metrics

    run_dir = work / name
    cmd = [*prefix, *_torchrun("configs/quickstart/rl.yaml", [
        f"engine.model_path={sft_dir}", f"trainer.run_dir={run_dir}", "trainer.eval_every=0",
        "trainer.eval_samples=0",  # held-out accuracy is measured below, the same way for every run and TRL
        f"trainer.stages=[{{max_new_tokens: {BATCH['max_new_tokens']}, steps: {steps}}}]", *overrides])]
    cmd[cmd.index("--nproc-per-node") + 1] = str(nproc)
    wall, peak = _run_tree(cmd, _env(1), work / f"{name}.log")
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "time/train" in r]
    s_per_step = _steady_seconds_per_step({r["step"]: r["wall_seconds"] for r in rows}, steps)
    steady = rows[1:]
    out = {"s_per_step": s_per_step, "samples_per_s": SAMPLES_PER_STEP / s_per_step, "wall_s": wall,
           "peak_rss_mb": peak, "train_reward_accuracy_last5": sum(r["reward/accuracy"] for r in rows[-5:]) / 5}
    if "async/trainer_wait_fraction" in rows[-1]:
        out["trainer_idle_fraction"] = rows[-1]["async/trainer_wait_fraction"]
        out["generation_idle_fraction"] = rows[-1]["async/generation_idle_fraction"]
        out["staleness_mean"] = sum(r["async/staleness_mean"] for r in steady) / len(steady)
        out["staleness_max"] = max(r["async/staleness_max"] for r in rows)
    else:
        rollout = sum(r["time/rollout"] for r in steady) / len(steady)
        rest = sum(r[f"time/{p}"] for r in steady for p in ("reward", "logprobs", "train", "sync")) / len(steady)
        out["trainer_idle_fraction"] = rollout / s_per_step
        out["generation_idle_fraction"] = 1.0 - rollout / s_per_step
        # generation on devices of its own (a disaggregated cluster): a step costs max(rollout, the rest)
        out["disaggregated_bound_s_per_step"] = max(rollout, rest)
    return {**{f"{name}_{k}": v for k, v in out.items()}, **_accuracies(name, run_dir / "hf")}


def _pinned_server(sft_dir: Path, work: Path, name: str) -> tuple[subprocess.Popen, str]:
    """A fresh reference server on core 0 (serving the SFT weights); returns (process, url) once /health answers."""
    from areal_mega.platform.device import free_port
    from areal_mega.rollout.launcher import wait_healthy

    port = free_port()
    log = work / f"{name}_server.log"
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "areal_mega.rollout.server",
                             "--model", str(sft_dir), "--port", str(port)], cwd=ROOT, env=_env(1),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log, time.monotonic() + 300)
    return proc, url


def _ours_pinned(work: Path, sft_dir: Path, steps: int, name: str, overrides: list[str]) -> dict:
    """One of ours with the server on core 0 and the trainer (one rank, TP=1) on core 1. The server is
    started for this run only: the trainer does not sync weights before its first step, so a server
    kept from the run before would still hold that run's final weights."""
    proc, url = _pinned_server(sft_dir, work, name)
    try:
        return _ours(work, sft_dir, steps, name, [f"rollout.urls=[{url}]", "engine.parallel.tp=1", *overrides],
                     ["taskset", "-c", "1"], nproc=1)
    finally:
        proc.kill()
        proc.wait()


def _table(figures: dict, names: list[str]) -> str:
    """The side-by-side comparison, one markdown row per run."""
    lines = ["| run | s/step | samples/s | vs TRL samples/s | trainer idle | generation idle | staleness mean / max "
             "| Pass@1 after | greedy after |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        f = {k.removeprefix(f"{name}_"): v for k, v in figures.items() if k.startswith(f"{name}_")}
        stale = f"{f['staleness_mean']:.2f} / {f['staleness_max']:.0f}" if "staleness_mean" in f else "-"
        lines.append(f"| {name} | {f['s_per_step']:.3f} | {f['samples_per_s']:.1f} | "
                     f"{f['samples_per_s'] / figures['trl_samples_per_s']:.2f}x | {f['trainer_idle_fraction']:.2f} | "
                     f"{f['generation_idle_fraction']:.2f} | {stale} | {f['accuracy_after']:.3f} | "
                     f"{f['greedy_after']:.3f} |")
    return "\n".join(lines)


def main(quick: bool = False, pinned: bool = False) -> dict:
    steps, sft_steps = (5, 60) if quick else (30, 960)  # 960: the quickstart's SFT (sft.yaml)
    work = ROOT / "outputs" / ("bench_async" + ("_pinned" if pinned else "") + ("_quick" if quick else ""))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sft_dir, sft_wall = _sft(work, sft_steps)
    figures = {"layout": ("pinned: server on core 0, trainer (1 rank) on core 1" if pinned
                          else "shared: trainer (2 ranks, DP) and server on the same 2 cores"),
               "rl_steps": steps, "sft_steps": 0 if os.environ.get("BENCH_RL_SFT") else sft_steps,
               "sft_wall_s": sft_wall, **{f"batch_{k}": v for k, v in BATCH.items()},
               "accuracy_metric": f"Pass@1 averaged over {EVAL_K} samples at T={BATCH['temperature']:g}, 200 held-out",
               "accuracy_before": heldout_accuracy(sft_dir, BATCH["temperature"], EVAL_K),
               "greedy_before": heldout_accuracy(sft_dir)}
    runs = [("sync", []), *((f"async{eta}", [*ASYNC, f"trainer.max_staleness={eta}"]) for eta in ETAS)]
    for name, overrides in runs:
        if pinned:
            figures.update(_ours_pinned(work, sft_dir, steps, f"pinned_{name}", overrides))
        else:  # one generation server, whatever the quickstart ships
            figures.update(_ours(work, sft_dir, steps, name, ["rollout.num_servers=1", *overrides]))
    figures.update(_trl(work, sft_dir, steps))
    figures["trl_samples_per_s"] = SAMPLES_PER_STEP / figures["trl_s_per_step"]
    figures["trl_trainer_idle_fraction"] = figures["trl_time_generate_s"] / figures["trl_s_per_step"]
    figures["trl_generation_idle_fraction"] = 1.0 - figures["trl_trainer_idle_fraction"]
    names = [f"pinned_{name}" if pinned else name for name, _ in runs]
    for name in names:
        rate = figures[f"{name}_samples_per_s"]
        figures[f"{name}_over_trl_samples_per_s"] = rate / figures["trl_samples_per_s"]
        figures[f"{name}_over_sync_samples_per_s"] = rate / figures[f"{names[0]}_samples_per_s"]
    print(_table(figures, [*names, "trl"]), flush=True)
    return figures
