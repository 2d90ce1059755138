"""Batches to the DP ranks and results back to the controller, as flat tensors (DESIGN.md §3).

The controller (global rank 0) holds the whole `SeqBatch`. `scatter_shares`
sends each DP replica only its share, once, as two flat tensors:

    ints   [2 * B_d + T_d] int64:  seq_lens [B_d], prompt_lens [B_d], token ids [T_d]
    floats [F, N_d]        float32: one row per per-response-token field (N_d response tokens)

point-to-point to the replica's lead rank (its lowest global rank), which
broadcasts them within the replica's model-parallel (TP x PP) group. Only
small metadata (share sizes, field names, global counts) goes through a
Python-object broadcast. `gather_to_controller` brings per-token results
(`[K, N_d]` float32 from each replica's producing rank) back to rank 0 only,
where they are put into the batch's sequence order.

All traffic goes over gloo groups: the engine's object group (whole job) and
one group per DP replica, built once by `DataGroups`.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from areal_mega.engine.packing import SeqBatch


@dataclasses.dataclass
class ShareMeta:
    """What every rank learns about a scattered batch (small): per-replica sizes and global counts."""

    sizes: list[tuple[int, int, int]]  # (sequences, tokens, response tokens) of each DP replica's share
    fields: list[str]
    num_seqs: int
    num_response_tokens: int


class DataGroups:
    """Who is who for data movement: each rank's DP index, each replica's lead and its gloo group.

    Built by every rank together (one small all-gather and one `new_group` per replica with more than
    one rank); `object_group` is a gloo group over the whole job.
    """

    def __init__(self, object_group, dp_rank: int, dp_size: int, producer: bool, timeout=None):
        self.object_group = object_group
        layout = [None] * dist.get_world_size()
        dist.all_gather_object(layout, (dp_rank, producer), group=object_group)
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.members = [[r for r, (d, _) in enumerate(layout) if d == dp] for dp in range(dp_size)]
        self.leads = [m[0] for m in self.members]
        self.producers = [min(r for r in m if layout[r][1]) for m in self.members]
        if self.leads[0] != 0:
            raise RuntimeError(f"global rank 0 must lead DP replica 0, leads are {self.leads}")
        self.groups = []
        for ranks in self.members:  # every rank creates every group, in the same order
            kwargs = {"timeout": timeout} if timeout is not None else {}
            self.groups.append(dist.new_group(ranks, backend="gloo", **kwargs) if len(ranks) > 1 else None)

    @property
    def my_group(self):
        return self.groups[self.dp_rank]

    @property
    def my_lead(self) -> int:
        return self.leads[self.dp_rank]


def flatten(batch: SeqBatch, fields: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ints [2B + T] int64, floats [F, N] float32) of `batch` (layout in the module docstring)."""
    lengths = [len(ids) for ids in batch.input_ids]
    ints = torch.empty(2 * len(batch) + sum(lengths), dtype=torch.int64)
    ints[: len(batch)] = torch.tensor(lengths, dtype=torch.int64)
    ints[len(batch) : 2 * len(batch)] = torch.tensor(batch.prompt_lens, dtype=torch.int64)
    if batch.input_ids:
        ints[2 * len(batch) :] = torch.tensor([t for ids in batch.input_ids for t in ids], dtype=torch.int64)
    n = batch.num_response_tokens()
    floats = torch.empty(len(fields), n, dtype=torch.float32)
    for f, name in enumerate(fields):
        if n:
            torch.cat([v.float() for v in batch.token_fields[name]], out=floats[f])
    return ints, floats


def unflatten(ints: torch.Tensor, floats: torch.Tensor, num_seqs: int, fields: list[str]) -> SeqBatch:
    """The `SeqBatch` that `flatten` encoded (token fields are views into `floats`)."""
    lengths = ints[:num_seqs].tolist()
    prompt_lens = ints[num_seqs : 2 * num_seqs].tolist()
    flat = ints[2 * num_seqs :].tolist()
    input_ids, start = [], 0
    for n in lengths:
        input_ids.append(flat[start : start + n])
        start += n
    response_lens = [n - p for n, p in zip(lengths, prompt_lens)]
    token_fields = {name: list(floats[f].split(response_lens)) for f, name in enumerate(fields)}
    return SeqBatch(input_ids, prompt_lens, token_fields)


def scatter_shares(batch: SeqBatch | None, parts: list[list[int]] | None, groups: DataGroups) -> tuple[SeqBatch, ShareMeta]:
    """All ranks: this rank's DP share of the controller's `batch`, split by `parts` (indices per replica,
    given on rank 0 only). Every rank of a replica gets the same share."""
    rank = dist.get_rank()
    box = [None]
    if rank == 0:
        fields = sorted(batch.token_fields)
        shares = [batch.select(p) for p in parts]
        box = [ShareMeta([(len(s), sum(len(i) for i in s.input_ids), s.num_response_tokens()) for s in shares],
                         fields, len(batch), batch.num_response_tokens())]
    dist.broadcast_object_list(box, src=0, group=groups.object_group)
    meta: ShareMeta = box[0]
    num_seqs, num_tokens, num_resp = meta.sizes[groups.dp_rank]
    ints = torch.empty(2 * num_seqs + num_tokens, dtype=torch.int64)
    floats = torch.empty(len(meta.fields), num_resp, dtype=torch.float32)
    if rank == 0:
        pending = []
        for dp, share in enumerate(shares):
            i, f = flatten(share, meta.fields)
            if dp == 0:
                ints, floats = i, f
            else:  # empty tensors are not sent: the receiver knows their shapes from `meta`
                pending += [dist.isend(t, groups.leads[dp], group=groups.object_group) for t in (i, f) if t.numel()]
        for work in pending:
            work.wait()
    elif rank == groups.my_lead:
        for t in (ints, floats):
            if t.numel():
                dist.recv(t, 0, group=groups.object_group)
    if groups.my_group is not None:
        for t in (ints, floats):
            if t.numel():
                dist.broadcast(t, groups.my_lead, group=groups.my_group)
    return unflatten(ints, floats, num_seqs, meta.fields), meta


def gather_to_controller(local: torch.Tensor | None, k: int, parts: list[list[int]] | None, meta: ShareMeta,
                         response_lens: list[int] | None, groups: DataGroups) -> torch.Tensor | None:
    """Per-token results back to rank 0 in the batch's order.

    local: `[k, N_d]` float32 on each replica's producing rank (tokens in share order), None elsewhere.
    parts, response_lens: rank 0 only, the indices per replica and each sequence's response length.
    Returns `[K, num_response_tokens]` float32 on rank 0 (sequences in batch order), None elsewhere.
    """
    rank = dist.get_rank()
    if rank != 0:
        if groups.producers[groups.dp_rank] == rank and local.numel():
            dist.send(local.contiguous(), 0, group=groups.object_group)
        return None
    pieces = []
    for dp, producer in enumerate(groups.producers):
        if producer == 0:
            pieces.append(local)
            continue
        buf = torch.empty(k, meta.sizes[dp][2], dtype=torch.float32)
        if buf.numel():
            dist.recv(buf, producer, group=groups.object_group)
        pieces.append(buf)
    offsets = torch.zeros(len(response_lens) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(response_lens, dtype=torch.int64), 0)
    out = torch.empty(k, int(offsets[-1]), dtype=torch.float32)
    for piece, indices in zip(pieces, parts):  # one index_copy per replica: its sequences' token ranges
        if not indices:
            continue
        starts, lens = offsets[indices], torch.tensor([response_lens[i] for i in indices], dtype=torch.int64)
        dest = torch.repeat_interleave(starts - torch.cumsum(lens, 0) + lens, lens) + torch.arange(int(lens.sum()))
        out.index_copy_(1, dest, piece)
    return out
