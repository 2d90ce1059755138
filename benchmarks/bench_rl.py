"""The quickstart RL step, per phase, against TRL's GRPOTrainer on the same task, model and batch.

One run: build the tiny Qwen2 (launch/make_tiny_model.py), the quickstart's
noisy-teacher SFT warm start through our trainer (configs/quickstart/sft.yaml;
or reuse an SFT HF export named by `BENCH_RL_SFT`), then from that same
checkpoint
- ours, as the quickstart ships it: `torchrun --nproc-per-node 2 -m
  areal_mega.train --config configs/quickstart/rl.yaml` for N steps (its
  layout, two reference servers, OMP_NUM_THREADS=1 per process); per-phase
  seconds from metrics.jsonl; and the same with one server (`ours_1server_*`);
- TRL: `GRPOTrainer` in one process (the CPU, fp32, transformers `generate`),
  OMP_NUM_THREADS=2 so both sides may use the machine's 2 cores;
both with the quickstart's batch (16 prompts x 8 samples), temperature and
learning rate (read from rl.yaml), <= 16 new tokens, reward +5/-5
(`areal_mega.reward`), group-normalised advantages, clip 0.2, KL 0, one
AdamW step per batch (betas 0.9/0.999, eps 1e-8, clip 1.0), token-mean loss
over the batch (TRL `loss_type="dapo"`).

Seconds per step are steady state: (wall at step N - wall at step 1) / (N - 1),
so start-up, the first step and evaluation are left out. Accuracy: the
quickstart's measure, Pass@1 averaged over 4 samples per problem at the
rollout temperature (<= 32 tokens, seeded), and greedy, on the 200 held-out
problems of `synthetic_split`, scored by `areal_mega.reward`, with one
function (transformers `generate`) for the SFT start, our final export and
TRL's final model; ours is also read from the trainer's own evaluation on
its generation server. Peak memory: the
largest sum of resident set sizes over the run's process tree (sampled every
0.2 s: torchrun + 2 ranks + server + reward worker for ours; trainer + reward
worker for TRL).

`python -m benchmarks.bench_rl trl MODEL OUT STEPS` is the TRL child.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("rollout", "reward", "logprobs", "train", "sync")


def _quickstart_batch() -> dict:
    from omegaconf import OmegaConf

    rl = OmegaConf.load(ROOT / "configs/quickstart/rl.yaml")
    return dict(prompts=rl.data.batch_size, n_samples=rl.rollout.n_samples, temperature=rl.rollout.temperature,
                max_new_tokens=rl.rollout.max_new_tokens, lr=rl.engine.optimizer.lr)


BATCH = _quickstart_batch()
EVAL_K = 4


def _run_tree(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run `cmd` to completion; returns (wall seconds, peak summed RSS of its process tree in MB)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; log {log}:\n{tail}")
    return wall, peak / 2**20


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _torchrun(config: str, overrides: list[str]) -> list[str]:
    from areal_mega.platform.device import free_port

    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "-m", "areal_mega.train", "--config", config, *overrides]


def _steady_seconds_per_step(walls: dict[int, float], steps: int) -> float:
    """(wall[N] - wall[1]) / (N - 1): the first step and start-up left out."""
    return (walls[steps] - walls[1]) / (steps - 1)


# ------------------------------------------------------------------ evaluation (shared by both sides)
def heldout_accuracy(model_dir: str | Path, temperature: float = 0.0, k: int = 1, max_new_tokens: int = 32) -> float:
    """Accuracy on the 200 held-out problems (the trainer's `evaluate`, through transformers): greedy at
    temperature 0, else Pass@1 averaged over `k` samples per problem at `temperature` (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM

    from areal_mega.data import build_prompts, synthetic_split
    from areal_mega.models.tiny import load_tokenizer
    from areal_mega.reward import RewardConfig, RewardPool

    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    held = build_prompts(synthetic_split()[1], tok, "quickstart", 64)
    width = max(len(p) for p in held.input_ids)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in held.input_ids])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in held.input_ids])[:, None]).long()
    torch.manual_seed(0)
    sample = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}
    texts = []
    with torch.no_grad():
        for _ in range(k if temperature > 0 else 1):
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, **(sample or {"do_sample": False}))
            texts += tok.batch_decode(out[:, width:], skip_special_tokens=True)
    with RewardPool(RewardConfig(num_workers=1)) as pool:
        correct = pool.correct(texts, [r.answer for r in held.records] * (len(texts) // len(held.records)))
    return sum(correct) / len(correct)


# ------------------------------------------------------------------ TRL side (child process)
def run_trl(model_dir: str, out_dir: str, steps: int) -> None:
    """Train GRPOTrainer for `steps` steps from `model_dir`; writes out_dir/{hf/, trl.json}."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from areal_mega.data import synthetic_split
    from areal_mega.models.tiny import load_tokenizer
    from areal_mega.reward import RewardConfig, RewardPool

    torch.manual_seed(1)
    pool = RewardPool(RewardConfig(num_workers=1))
    times = {"generate": 0.0, "reward": 0.0}
    accuracy = []

    def reward_fn(completions, answer, **_):
        t0 = time.perf_counter()
        scores = pool.score(list(completions), list(answer))
        times["reward"] += time.perf_counter() - t0
        accuracy.append(sum(s > 0 for s in scores) / len(scores))
        return scores

    class StepClock(TrainerCallback):
        walls: dict = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.walls[state.global_step] = time.perf_counter()

    train = Dataset.from_list([{"prompt": r.problem, "answer": r.answer} for r in synthetic_split()[0]])
    n = BATCH["prompts"] * BATCH["n_samples"]
    args = GRPOConfig(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=n, gradient_accumulation_steps=1,
        num_generations=BATCH["n_samples"], max_completion_length=BATCH["max_new_tokens"],
        temperature=BATCH["temperature"], top_p=1.0, top_k=0, learning_rate=BATCH["lr"], lr_scheduler_type="constant",
        warmup_steps=0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
        beta=0.0, epsilon=0.2, num_iterations=1, loss_type="dapo", scale_rewards="group", use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, seed=1, dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    clock = StepClock()
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=train,
                          processing_class=load_tokenizer(model_dir), callbacks=[clock])
    generate = trainer._generate_single_turn

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = generate(*a, **k)
        times["generate"] += time.perf_counter() - t0
        return out

    trainer._generate_single_turn = timed_generate
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    trainer.save_model(str(Path(out_dir) / "hf"))
    pool.close()
    result = {"walls": {str(k): v for k, v in clock.walls.items()}, "wall_s": wall,
              "time_generate_s": times["generate"], "time_reward_s": times["reward"], "reward_accuracy": accuracy,
              "trl_version": __import__("trl").__version__}
    (Path(out_dir) / "trl.json").write_text(json.dumps(result))


# ------------------------------------------------------------------ the benchmark
def _sft(work: Path, steps: int) -> tuple[Path, float]:
    """Tiny model + SFT warm start through our trainer; returns (HF export dir, wall seconds)."""
    reuse = os.environ.get("BENCH_RL_SFT")
    if reuse:
        return Path(reuse).resolve(), 0.0
    subprocess.run([sys.executable, "launch/make_tiny_model.py", str(work / "init")], cwd=ROOT, check=True,
                   env=_env(1), stdout=subprocess.DEVNULL)
    cmd = _torchrun("configs/quickstart/sft.yaml",
                    [f"engine.model_path={work / 'init'}", f"trainer.run_dir={work / 'sft'}",
                     f"trainer.stages=[{{max_new_tokens: 16, steps: {steps}}}]", f"engine.optimizer.total_steps={steps}"])
    wall, _ = _run_tree(cmd, _env(1), work / "sft.log")
    return work / "sft" / "hf", wall


def _ours(work: Path, sft_dir: Path, steps: int, name: str = "ours", overrides: tuple = ()) -> dict:
    """Our trainer from `sft_dir` for `steps` RL steps; figures prefixed `name_`."""
    run_dir = work / name
    cmd = _torchrun("configs/quickstart/rl.yaml",
                    [f"engine.model_path={sft_dir}", f"trainer.run_dir={run_dir}", "trainer.eval_every=0",
                     f"trainer.stages=[{{max_new_tokens: {BATCH['max_new_tokens']}, steps: {steps}}}]", *overrides])
    wall, peak = _run_tree(cmd, _env(1), work / f"{name}.log")
    from areal_mega.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    step_rows = [r for r in rows if "time/train" in r]
    walls = {r["step"]: r["wall_seconds"] for r in step_rows}
    steady = [r for r in step_rows if r["step"] > 1]
    out = {"ours_s_per_step": _steady_seconds_per_step(walls, steps), "ours_first_step_s": walls[1],
           "ours_wall_s": wall, "ours_peak_rss_mb": peak}
    for phase in PHASES:
        out[f"ours_time_{phase}_s"] = sum(r[f"time/{phase}"] for r in steady) / len(steady)
    out["ours_time_other_s"] = out["ours_s_per_step"] - sum(out[f"ours_time_{p}_s"] for p in PHASES)
    out["ours_train_reward_accuracy_last5"] = sum(r["reward/accuracy"] for r in step_rows[-5:]) / 5
    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    out["ours_server_eval_before"], out["ours_server_eval_after"] = evals[0], evals[-1]
    out.update(_accuracies("ours", run_dir / "hf"))
    return {k.replace("ours_", f"{name}_", 1): v for k, v in out.items()}


def _trl(work: Path, sft_dir: Path, steps: int) -> dict:
    out_dir = work / "trl"
    cmd = [sys.executable, "-m", "benchmarks.bench_rl", "trl", str(sft_dir), str(out_dir), str(steps)]
    wall, peak = _run_tree(cmd, _env(2), work / "trl.log")
    res = json.loads((out_dir / "trl.json").read_text())
    walls = {int(k): v for k, v in res["walls"].items()}
    s_per_step = _steady_seconds_per_step(walls, steps)
    return {"trl_version": res["trl_version"], "trl_s_per_step": s_per_step, "trl_wall_s": wall,
            "trl_peak_rss_mb": peak,
            "trl_time_generate_s": res["time_generate_s"] / steps, "trl_time_reward_s": res["time_reward_s"] / steps,
            "trl_time_other_s": s_per_step - (res["time_generate_s"] + res["time_reward_s"]) / steps,
            "trl_train_reward_accuracy_last5": sum(res["reward_accuracy"][-5:]) / 5,
            **_accuracies("trl", out_dir / "hf")}


def _accuracies(name: str, model_dir: Path) -> dict:
    return {f"{name}_accuracy_after": heldout_accuracy(model_dir, BATCH["temperature"], EVAL_K),
            f"{name}_greedy_after": heldout_accuracy(model_dir)}


def main(quick: bool = False) -> dict:
    steps, sft_steps = (5, 60) if quick else (30, 960)  # 960: the quickstart's SFT (sft.yaml)
    work = ROOT / "outputs" / ("bench_rl_quick" if quick else "bench_rl")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sft_dir, sft_wall = _sft(work, sft_steps)
    figures = {"rl_steps": steps, "sft_steps": 0 if os.environ.get("BENCH_RL_SFT") else sft_steps,
               "sft_wall_s": sft_wall, **{f"batch_{k}": v for k, v in BATCH.items()},
               "accuracy_metric": f"Pass@1 averaged over {EVAL_K} samples at T={BATCH['temperature']:g}, 200 held-out",
               "accuracy_before": heldout_accuracy(sft_dir, BATCH["temperature"], EVAL_K),
               "greedy_before": heldout_accuracy(sft_dir)}
    figures.update(_ours(work, sft_dir, steps))
    # what the quickstart's two single-threaded generation servers buy over one, in the same run
    figures.update(_ours(work, sft_dir, steps, "ours_1server", ("rollout.num_servers=1",)))
    figures.update(_trl(work, sft_dir, steps))
    figures["trl_over_ours_s_per_step"] = figures["trl_s_per_step"] / figures["ours_s_per_step"]
    figures["trl_over_ours_peak_rss"] = figures["trl_peak_rss_mb"] / figures["ours_peak_rss_mb"]
    return figures


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "trl":
        raise SystemExit("usage: python -m benchmarks.bench_rl trl MODEL_DIR OUT_DIR STEPS")
    run_trl(sys.argv[2], sys.argv[3], int(sys.argv[4]))
