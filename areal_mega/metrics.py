"""Per-step metrics: a local `metrics.jsonl` (one JSON object per step) and wandb, from rank 0 only.

`metrics.jsonl` is the record the plots and tests read: each line is
`{"step": N, "key": value, ...}` with plain floats; NaN/inf values are written
as null so the file stays standard JSON. On resume, rows past the resumed
step are dropped (they belong to steps that will be re-run) and the wandb run
id kept in `RUN_DIR/wandb_id.txt` continues the same wandb run.

wandb mode "auto" is "online" when WANDB_API_KEY is set, else "offline"; a
WANDB_MODE environment variable (tests set "disabled") wins over "auto".
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from areal_mega.jsonl import JsonlError, iter_jsonl

WANDB_MODES = ("auto", "online", "offline", "disabled")
_ROW_SHAPE = "a row must be a JSON object with an integer 'step'"


@dataclass
class WandbConfig:
    """wandb run settings: project, run name (None: wandb picks one), tags, entity, group, mode."""

    project: str = "areal-mega"
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    entity: Optional[str] = None
    group: Optional[str] = None
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"wandb.mode: '{self.mode}' is not one of {', '.join(WANDB_MODES)}")
        if not self.project:
            raise ValueError("wandb.project: must be a non-empty string")


def resolve_wandb_mode(mode: str) -> str:
    """The wandb mode to run in: "auto" -> $WANDB_MODE, else online with an API key, else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def _plain(value):
    """A JSON-safe scalar: tensors and numpy scalars become floats/ints, non-finite floats None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsLogger:
    """Writes one row per step to `run_dir/metrics.jsonl` and to wandb; a no-op off rank 0.

    resume_step: when resuming from a checkpoint taken after step N, pass N:
    rows with step > N are dropped from the file first. config: the run's
    config as a plain dict, stored with the wandb run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        wandb_cfg: WandbConfig | None = None,
        config: dict | None = None,
        resume_step: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.enabled = (_rank() if rank is None else rank) == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        wandb_cfg = wandb_cfg or WandbConfig()
        mode = resolve_wandb_mode(wandb_cfg.mode)
        if mode != "disabled":
            self._wandb = self._start_wandb(wandb_cfg, mode, config, resumed=resume_step is not None)

    def _truncate_after(self, step: int) -> None:
        kept = [row for row in read_metrics(self.path) if row["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def _start_wandb(self, cfg: WandbConfig, mode: str, config: dict | None, resumed: bool):
        import wandb

        id_file = self.path.parent / "wandb_id.txt"
        run_id = id_file.read_text().strip() if resumed and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        return wandb.init(
            project=cfg.project,
            name=cfg.name,
            tags=list(cfg.tags),
            entity=cfg.entity,
            group=cfg.group,
            mode=mode,
            id=run_id,
            resume="allow",
            dir=str(self.path.parent),
            config=config,
        )

    def log(self, step: int, metrics: dict) -> None:
        """Record `metrics` (name -> number, tensor or string) for `step`; flushed at once."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items() if k != "step"}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=int(step))

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict]:
    """All rows of a metrics.jsonl file; a malformed line raises JsonlError (a ValueError) naming file and line."""
    try:
        numbered = list(iter_jsonl(path))
    except JsonlError as e:
        raise JsonlError(f"{e} ({_ROW_SHAPE})") from None
    for lineno, row in numbered:
        if not isinstance(row.get("step"), int):
            raise JsonlError(f"{path}:{lineno}: {_ROW_SHAPE}")
    return [row for _, row in numbered]


@contextlib.contextmanager
def timer(times: dict, name: str, sync: bool = True) -> Iterator[None]:
    """Add the seconds spent in the block to `times["time/" + name]` (accumulating).

    With `sync`, CUDA work is waited for at both ends (when CUDA is present),
    so asynchronous kernels are charged to the phase that launched them.
    """
    cuda = False
    if sync:
        import torch

        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        if cuda:
            import torch

            torch.cuda.synchronize()
        key = f"time/{name}"
        times[key] = times.get(key, 0.0) + time.perf_counter() - start


_PHASES = ("rollout", "reward", "logprobs", "train", "sync")


def step_line(step: int, total: int, m: dict) -> str:
    """One compact line for the console: step, reward, accuracy, response length, clip fraction, KL
    (PPO's old-vs-new, and to the reference when on), seconds by phase; SFT steps show the NLL."""
    parts = [f"step {step:>{len(str(total))}}/{total}"]

    def add(fmt: str, key: str):
        if m.get(key) is not None:
            parts.append(fmt.format(m[key]))

    add("reward {:+.2f}", "reward/mean")
    add("acc {:.3f}", "reward/accuracy")
    add("len {:.1f}", "response_length/mean")
    add("nll {:.4f}", "train/nll")
    add("clip {:.3f}", "train/clip_fraction")
    add("kl {:.1e}", "train/approx_kl")
    add("kl_ref {:.1e}", "train/kl_ref")
    add("|dlp| {:.1e}", "logprob_diff_abs_mean")
    times = [f"{p} {m[f'time/{p}']:.2f}" for p in _PHASES if m.get(f"time/{p}") is not None]
    if times:
        parts.append("s: " + " ".join(times))
    return " | ".join(parts)


def eval_line(step: int, m: dict) -> str:
    """The held-out evaluation's line: `m` holds eval/accuracy (and eval/metric, eval/accuracy_greedy)."""
    line = f"eval at step {step}: held-out accuracy {m['eval/accuracy']:.3f}"
    if m.get("eval/metric"):
        line += f" ({m['eval/metric']})"
    if m.get("eval/accuracy_greedy") is not None:
        line += f", greedy {m['eval/accuracy_greedy']:.3f}"
    return line
