"""Prompt templates and token-budget filtering.

- `r1_distill`: the user turn is the question plus "Please reason step by
  step, and put your final answer within \\boxed{}."; rendered with the
  tokenizer's chat template when it has one (generation prompt added),
  otherwise with the DeepSeek-R1-Distill format built in here, which opens
  the assistant turn with `<think>\\n` as R1-distill models expect.
- `qwen_zero`: a plain-text conversation for base models (Qwen2.5 "zero"
  RL), asking for the final answer in \\boxed{}.
- `quickstart`: the question text alone (the synthetic task's model learns
  to answer ` \\boxed{68}` then EOS).
"""
from __future__ import annotations

from dataclasses import dataclass

from areal_mega.data.config import TEMPLATES
from areal_mega.data.jsonl import MathRecord

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
R1_FALLBACK = "<｜begin▁of▁sentence｜><｜User｜>{content}<｜Assistant｜><think>\n"
QWEN_ZERO = (
    "A conversation between User and Assistant. The User asks a math question, and the Assistant "
    "solves it step by step and puts the final answer within \\boxed{{}}.\nUser: {question}\nAssistant:"
)


def render_prompt(question: str, template: str, tokenizer=None) -> str:
    """Prompt text for `question` in `template` (one of TEMPLATES)."""
    if template == "quickstart":
        return question
    if template == "qwen_zero":
        return QWEN_ZERO.format(question=question)
    if template == "r1_distill":
        content = f"{question}\n{INSTRUCTION}"
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": content}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return R1_FALLBACK.format(content=content)
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")


def opens_think(template: str, tokenizer=None) -> bool:
    """True when `template`'s prompts end inside an open `<think>` block (the R1-distill assistant turn
    `...<think>\\n`): the response continues the reasoning, so it holds a `</think>` only if the model
    finished thinking. Callers then score `"<think>" + response` (`reward.extract.continue_think`), so a
    response cut off while thinking has no committed answer, as when the tag is in the response itself."""
    prompt = render_prompt("", template, tokenizer)
    return prompt.rfind("<think>") > prompt.rfind("</think>")


@dataclass
class PromptSet:
    """Records that fit the budget and their prompt token ids (`input_ids[i]`: [prompt_len] ints)."""

    records: list[MathRecord]
    input_ids: list[list[int]]
    num_filtered: int
    opens_think: bool = False  # the template leaves the model inside `<think>` (see `opens_think`)


def build_prompts(records: list[MathRecord], tokenizer, template: str, max_prompt_tokens: int) -> PromptSet:
    """Render and tokenize every record; drop (and count) prompts longer than `max_prompt_tokens`.

    Special tokens come from the rendered text itself (chat templates include
    BOS), so the tokenizer adds none.
    """
    kept, ids, dropped = [], [], 0
    for rec in records:
        tokens = tokenizer(render_prompt(rec.problem, template, tokenizer), add_special_tokens=False)["input_ids"]
        if len(tokens) > max_prompt_tokens:
            dropped += 1
            continue
        kept.append(rec)
        ids.append(list(tokens))
    return PromptSet(kept, ids, dropped, opens_think(template, tokenizer))
