"""The one packing routine: sequences -> micro-batches under a token budget.

A `SeqBatch` holds whole sequences (prompt + response token ids) and, per
response token, any float fields the loss needs (advantages, old_logprobs,
...). `pack` puts several sequences into one row per micro-batch (first-fit
decreasing by length), and records, for every response token, the row
position whose next-token prediction scores it. Under sequence parallelism a
row's length must divide by TP: `pad_to_multiple` then appends padding tokens
as one more attention segment of their own, which no loss position points at.
`partition_balanced` assigns sequences to DP ranks by token count.
"""
from __future__ import annotations

import dataclasses
import heapq

import torch


@dataclasses.dataclass
class SeqBatch:
    """A batch of sequences; `token_fields[k][i]` is `[response_len_i]` float32."""

    input_ids: list[list[int]]
    prompt_lens: list[int]
    token_fields: dict[str, list[torch.Tensor]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.input_ids) != len(self.prompt_lens):
            raise ValueError(f"input_ids has {len(self.input_ids)} sequences, prompt_lens {len(self.prompt_lens)}")
        for i, (ids, p) in enumerate(zip(self.input_ids, self.prompt_lens)):
            if not 1 <= p < len(ids):
                raise ValueError(f"sequence {i}: prompt_len {p} must be in [1, {len(ids)}) (needs >= 1 response token)")
        for name, values in self.token_fields.items():
            if len(values) != len(self.input_ids):
                raise ValueError(f"token_fields['{name}'] has {len(values)} entries for {len(self.input_ids)} sequences")
            for i, v in enumerate(values):
                if v.shape != (self.response_len(i),):
                    raise ValueError(
                        f"token_fields['{name}'][{i}] has shape {tuple(v.shape)}, expected ({self.response_len(i)},)"
                    )

    def __len__(self) -> int:
        return len(self.input_ids)

    def response_len(self, i: int) -> int:
        return len(self.input_ids[i]) - self.prompt_lens[i]

    def num_response_tokens(self) -> int:
        return sum(self.response_len(i) for i in range(len(self)))

    def select(self, indices: list[int]) -> "SeqBatch":
        return SeqBatch(
            input_ids=[self.input_ids[i] for i in indices],
            prompt_lens=[self.prompt_lens[i] for i in indices],
            token_fields={k: [v[i] for i in indices] for k, v in self.token_fields.items()},
        )


@dataclasses.dataclass
class MicroBatch:
    """One packed row.

    input_ids, position_ids: [1, T] int64 (positions restart at 0 per sequence and in the padding).
    seq_lens: [num_seqs] int64 lengths of the packed sequences (sum = T - num_pad).
    loss_positions: [N] int64 row positions whose next token is a response token.
    targets: [N] int64 the response tokens, in the order of `loss_positions`.
    seq_index: indices (into the packed SeqBatch) of the sequences in this row.
    token_fields: name -> [N] float32, aligned with `targets`.
    num_pad: padding tokens at the end of the row (token id 0), attended only among themselves, never scored.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    seq_lens: torch.Tensor
    loss_positions: torch.Tensor
    targets: torch.Tensor
    seq_index: list[int]
    token_fields: dict[str, torch.Tensor]
    num_pad: int = 0

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def response_lens(self) -> torch.Tensor:
        """[num_seqs] number of response tokens of each sequence in the row."""
        return torch.bincount(self._token_seq(), minlength=len(self.seq_index))

    def _token_seq(self) -> torch.Tensor:
        starts = torch.cumsum(self.seq_lens, 0) - self.seq_lens
        return torch.searchsorted(starts, self.loss_positions, right=True) - 1


def _first_fit_decreasing(lengths: list[int], budget: int) -> list[list[int]]:
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > budget:
            raise ValueError(
                f"sequence {i} has {lengths[i]} tokens, more than engine.max_tokens_per_micro_batch={budget}; "
                "raise the budget (sequences are never truncated)"
            )
        for b, room in enumerate(free):
            if lengths[i] <= room:
                bins[b].append(i)
                free[b] -= lengths[i]
                break
        else:
            bins.append([i])
            free.append(budget - lengths[i])
    for b in bins:
        b.sort()
    return sorted(bins, key=lambda b: b[0])


def pack(batch: SeqBatch, max_tokens: int, pad_to_multiple: int = 1) -> list[MicroBatch]:
    """Pack `batch` into rows of at most `max_tokens` tokens each, then pad each row up to a multiple of
    `pad_to_multiple` (sequence parallelism: TP; the padding adds fewer than `pad_to_multiple` tokens)."""
    lengths = [len(ids) for ids in batch.input_ids]
    micro_batches = []
    for seq_index in _first_fit_decreasing(lengths, max_tokens):
        ids, pos, loss_pos, targets = [], [], [], []
        fields = {k: [] for k in batch.token_fields}
        for i in seq_index:
            start, seq, p = len(ids), batch.input_ids[i], batch.prompt_lens[i]
            ids.extend(seq)
            pos.extend(range(len(seq)))
            loss_pos.extend(range(start + p - 1, start + len(seq) - 1))
            targets.extend(seq[p:])
            for k in fields:
                fields[k].append(batch.token_fields[k][i].float())
        num_pad = -len(ids) % pad_to_multiple
        ids.extend([0] * num_pad)
        pos.extend(range(num_pad))
        micro_batches.append(
            MicroBatch(
                input_ids=torch.tensor([ids], dtype=torch.long),
                position_ids=torch.tensor([pos], dtype=torch.long),
                seq_lens=torch.tensor([lengths[i] for i in seq_index], dtype=torch.long),
                loss_positions=torch.tensor(loss_pos, dtype=torch.long),
                targets=torch.tensor(targets, dtype=torch.long),
                seq_index=seq_index,
                token_fields={k: torch.cat(v) for k, v in fields.items()},
                num_pad=num_pad,
            )
        )
    return micro_batches


def partition_balanced(lengths: list[int], num_parts: int) -> list[list[int]]:
    """Split indices into `num_parts` lists with near-equal token sums (greedy LPT).

    Every part gets at least one index when len(lengths) >= num_parts; with
    fewer sequences than parts, the last parts are empty.
    """
    heap = [(0, r) for r in range(num_parts)]
    parts: list[list[int]] = [[] for _ in range(num_parts)]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        load, r = heapq.heappop(heap)
        parts[r].append(i)
        heapq.heappush(heap, (load + lengths[i], r))
    return [sorted(p) for p in parts]
