"""Math data sets (JSONL + synthetic), prompt templates, resumable sampler."""
from areal_mega.data.config import DataConfig
from areal_mega.data.jsonl import DataError, MathRecord, data_dir, load_jsonl
from areal_mega.data.sampler import ResumableSampler
from areal_mega.data.synthetic import synthetic_split
from areal_mega.data.templates import PromptSet, build_prompts, render_prompt


def load_records(cfg: DataConfig) -> list[MathRecord]:
    """Training records named by `cfg.path` ("synthetic" gives the synthetic train split)."""
    if cfg.path == "synthetic":
        return synthetic_split(cfg.seed, cfg.synthetic_low, cfg.synthetic_high, cfg.synthetic_heldout)[0]
    return load_jsonl(cfg.path, cfg.problem_key, cfg.answer_key, cfg.id_key)


__all__ = [
    "DataConfig", "DataError", "MathRecord", "PromptSet", "ResumableSampler", "build_prompts", "data_dir",
    "load_jsonl", "load_records", "render_prompt", "synthetic_split",
]
