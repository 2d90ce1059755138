"""Shared test helpers: the trainer-side (plain transformers) references servers are checked against."""
from __future__ import annotations

import torch


def greedy_decode(model, prompt: list[int], max_new_tokens: int, eos_id: int | None = None) -> list[int]:
    """Greedy decode with full recomputation each step (no KV cache): `[<= max_new_tokens]` token ids."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            out.append(t)
            ids.append(t)
            if t == eos_id:
                break
    return out


def response_logprobs(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> list[float]:
    """log p(response token | prefix) under softmax(logits / temperature): `[len(response)]` floats."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response).unsqueeze(1)).squeeze(1).tolist()
