"""Data configuration (the `data:` section of a run config)."""
from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = ("r1_distill", "qwen_zero", "quickstart")


@dataclass
class DataConfig:
    """Where prompts come from and how they are shown to the model.

    path: a data set name under the data folder (`math500`, `aime24`, `amc23`,
        `deepscaler_train`), a `.jsonl` file, or `synthetic` (arithmetic, see
        synthetic.py).
    problem_key / answer_key / id_key: field mapping of the JSONL rows
        (id_key "" = use the line number).
    template: prompt format, one of TEMPLATES (see templates.py).
    max_prompt_tokens: prompts longer than this are dropped and counted.
    batch_size: prompts per RL step; seed: sampler shuffling seed.
    synthetic_low / synthetic_high / synthetic_heldout: operand range and
        held-out set size of the synthetic task.
    """

    path: str = "deepscaler_train"
    problem_key: str = "problem"
    answer_key: str = "answer"
    id_key: str = ""
    template: str = "r1_distill"
    max_prompt_tokens: int = 1024
    batch_size: int = 1024
    seed: int = 1
    synthetic_low: int = 10
    synthetic_high: int = 99
    synthetic_heldout: int = 200

    def __post_init__(self):
        if not self.path:
            raise ValueError("data.path must name a data set, a .jsonl file or 'synthetic'")
        if not self.problem_key or not self.answer_key:
            raise ValueError("data.problem_key and data.answer_key must be non-empty")
        if self.template not in TEMPLATES:
            raise ValueError(f"data.template must be one of {TEMPLATES}, got {self.template!r}")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"data.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.synthetic_low <= self.synthetic_high:
            raise ValueError(
                f"data.synthetic_low/synthetic_high must satisfy 0 <= low <= high, got {self.synthetic_low}, {self.synthetic_high}"
            )
        if self.synthetic_heldout < 0:
            raise ValueError(f"data.synthetic_heldout must be >= 0, got {self.synthetic_heldout}")
