"""SGLang's "flattened_bucket" wire format: one weight-sync bucket as one uint8 buffer, one broadcast.

    flat = pack(tensors)                          # sender: [sum of bytes] uint8
    tensors = unpack(flat, dtypes, shapes)        # receiver: views into flat, no copy
    tensors = receive(pg, dtypes, shapes, device, flattened=True)  # both receivers: one bucket

SGLang 0.5.23 receives /update_weights_from_distributed with `load_format:
"flattened_bucket"` this way (`FlattenedTensorBucket.empty` /
`reconstruct_tensors` in sglang/srt/weight_sync/tensor_bucket.py): the
bucket's tensors, in `names` order, back to back as bytes, each starting at a
byte offset that is a multiple of its dtype's item size (else it refuses the
bucket). Mixed dtypes share the buffer. The reference server and the vLLM
"areal" weight-transfer engine read the same format, so one sender serves
every backend with one broadcast per bucket instead of one per tensor.

Lives in rollout (the receivers' package) so the receivers and the sender
(weight_sync, which imports rollout) share one definition of the layout.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

LOAD_FORMAT = "flattened_bucket"  # SGLang's field value (UpdateWeightsFromDistributedReqInput.load_format)


def aligned_order(tensors: list[torch.Tensor]) -> list[int]:
    """Indices of `tensors` by item size, largest first (stable): then every offset is aligned.

    Item sizes are powers of two, so a sum of sizes of tensors with item size >= s is a multiple of s.
    """
    return sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())


def byte_ranges(dtypes: list[torch.dtype], shapes: list[list[int]]) -> list[tuple[int, int]]:
    """(start, end) byte range of each tensor in the buffer; raises ValueError naming an unaligned or bad one."""
    ranges, offset = [], 0
    for i, (dtype, shape) in enumerate(zip(dtypes, shapes, strict=True)):
        if any(d < 0 for d in shape):
            raise ValueError(f"shapes[{i}]: negative dimension in {list(shape)}")
        if offset % dtype.itemsize:
            raise ValueError(f"shapes[{i}]: tensor {i} ({dtype}) starts at byte {offset}, not a multiple of its "
                             f"item size {dtype.itemsize} (order a bucket by item size, largest first)")
        size = torch.Size(shape).numel() * dtype.itemsize
        ranges.append((offset, offset + size))
        offset += size
    return ranges


def pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors (contiguous, one device, in an aligned order) as one uint8 buffer `[total bytes]`.

    A single tensor is sent as a byte view of itself (no copy); several are copied once into the buffer.
    """
    if len(tensors) == 1:
        return tensors[0].reshape(-1).view(torch.uint8)
    ranges = byte_ranges([t.dtype for t in tensors], [list(t.shape) for t in tensors])
    flat = torch.empty(ranges[-1][1] if ranges else 0, dtype=torch.uint8, device=tensors[0].device)
    for t, (start, end) in zip(tensors, ranges):
        flat[start:end].view(t.dtype).copy_(t.reshape(-1))
    return flat


def empty(dtypes: list[torch.dtype], shapes: list[list[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """A receive buffer for `pack` of tensors with these dtypes and shapes (validates the layout)."""
    ranges = byte_ranges(dtypes, shapes)
    return torch.empty(ranges[-1][1] if ranges else 0, dtype=torch.uint8, device=device)


def unpack(flat: torch.Tensor, dtypes: list[torch.dtype], shapes: list[list[int]]) -> list[torch.Tensor]:
    """Views of `flat` (uint8) as the bucket's tensors, in order; raises ValueError if the sizes disagree."""
    ranges = byte_ranges(dtypes, shapes)
    total = ranges[-1][1] if ranges else 0
    if flat.numel() != total:
        raise ValueError(f"flattened bucket: {flat.numel()} bytes, the shapes and dtypes need {total}")
    return [flat[s:e].view(d).view(shape) for (s, e), d, shape in zip(ranges, dtypes, shapes)]


def receive(pg: dist.ProcessGroup, dtypes: list[torch.dtype], shapes: list[list[int]],
            device: torch.device | str = "cpu", flattened: bool = False) -> list[torch.Tensor]:
    """One bucket broadcast from group rank 0: with `flattened` one broadcast of the packed bucket (the tensors
    are views of its buffer), else one broadcast per tensor, in order. Layout errors raise before any broadcast."""
    if flattened:
        flat = empty(dtypes, shapes, device)
        dist.broadcast(flat, group=pg, group_src=0)
        return unpack(flat, dtypes, shapes)
    tensors = [torch.empty(shape, dtype=dtype, device=device) for dtype, shape in zip(dtypes, shapes, strict=True)]
    for t in tensors:
        dist.broadcast(t, group=pg, group_src=0)
    return tensors
