"""The flattened-bucket weight sync (SGLang's load_format "flattened_bucket"): a mixed-dtype bucket arrives
bitwise, and the sender makes one broadcast per bucket.

The sender is the real `stream_weights` in this process; the receiver is a spawned process that joins the
group and receives with `flat_bucket.receive`, the function the reference server and vLLM's "areal" engine
receive with. The HTTP control call is replaced by a queue carrying the same metadata (names, dtypes,
shapes, load_format) to the receiver, which sends back what it received.
"""
import io
import multiprocessing as mp
import threading

import pytest
import torch
import torch.distributed as dist

from areal_mega.platform.device import free_port
from areal_mega.platform.process_group import join_group, leave_group
from areal_mega.rollout import flat_bucket
from areal_mega.rollout.client import GenerationClient
from areal_mega.weight_sync.broadcast import WeightUpdateGroup, stream_weights

TIMEOUT_S = 120.0


def _receiver(port: int, group_name: str, meta_q, out_q) -> None:
    pg = join_group("127.0.0.1", port, 1, 2, group_name, "gloo", TIMEOUT_S)
    while (meta := meta_q.get(timeout=TIMEOUT_S)) is not None:
        dtypes = [getattr(torch, d) for d in meta["dtypes"]]
        got = flat_bucket.receive(pg, dtypes, meta["shapes"], flattened=meta["load_format"] == flat_bucket.LOAD_FORMAT)
        buf = io.BytesIO()
        torch.save([(n, t.clone()) for n, t in zip(meta["names"], got)], buf)
        out_q.put(buf.getvalue())
    leave_group(pg)


class QueueClient(GenerationClient):
    """Stands in for the servers' HTTP control plane: each bucket's metadata goes to the receiver's queue."""

    def __init__(self, meta_q):
        super().__init__(["http://receiver"])
        self.meta_q, self.load_formats = meta_q, []

    async def update_weights_from_distributed(self, url, names, dtypes, shapes, group_name, weight_version=None,
                                              flush_cache=True, load_format=None):
        self.load_formats.append(load_format)
        self.meta_q.put({"names": names, "dtypes": dtypes, "shapes": shapes, "load_format": load_format})

    async def close(self):
        pass


def _mixed_bucket() -> list[tuple[str, torch.Tensor]]:
    """fp32 (with -0, inf, nan), bf16 of odd sizes (a byte offset that would misalign what follows), fp64,
    int64, int32, int8, bool, a 0-dim and an empty tensor, in an order that is not aligned as given."""
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38])
    return [
        ("bf16_odd", torch.randn(7, generator=g).to(torch.bfloat16)),
        ("fp32_special", special),
        ("int8", torch.randint(-128, 127, (3,), generator=g, dtype=torch.int8)),
        ("fp32_matrix", torch.randn(5, 3, generator=g)),
        ("bool", torch.tensor([True, False, True])),
        ("int64", torch.randint(-2**62, 2**62, (4,), generator=g, dtype=torch.int64)),
        ("bf16_matrix", torch.randn(3, 3, generator=g).to(torch.bfloat16)),
        ("fp32_scalar", torch.tensor(2.5)),
        ("int32", torch.randint(-2**31, 2**31 - 1, (3,), generator=g, dtype=torch.int32)),
        ("fp64", torch.randn(2, generator=g, dtype=torch.float64)),
        ("fp32_empty", torch.zeros(0, 4)),
    ]


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def link():
    """(group, meta queue, result queue) to one receiving process; one group for the module's tests."""
    ctx = mp.get_context("spawn")
    meta_q, out_q = ctx.Queue(), ctx.Queue()
    port, name = free_port(), "flat_bucket_test_group"
    proc = ctx.Process(target=_receiver, args=(port, name, meta_q, out_q), daemon=True)
    proc.start()
    box = {}
    joiner = threading.Thread(target=lambda: box.update(pg=join_group("127.0.0.1", port, 0, 2, name, "gloo",
                                                                      TIMEOUT_S)))
    joiner.start()
    joiner.join(TIMEOUT_S + 10)
    assert "pg" in box, "receiver did not join the group"
    yield WeightUpdateGroup(box["pg"], name, "gloo", 2, torch.device("cpu"), TIMEOUT_S), meta_q, out_q
    meta_q.put(None)
    proc.join(30)
    leave_group(box["pg"])
    assert proc.exitcode == 0, f"receiver exit code {proc.exitcode}"


def _sync(link, named, bucket_bytes, flatten, monkeypatch):
    group, meta_q, out_q = link
    calls = []
    real = dist.broadcast
    monkeypatch.setattr(dist, "broadcast", lambda t, *a, **k: (calls.append(t.dtype), real(t, *a, **k))[1])
    client = QueueClient(meta_q)
    stats = stream_weights(group, client, named, None, bucket_bytes, flatten=flatten)
    monkeypatch.setattr(dist, "broadcast", real)
    received = {}
    for _ in range(stats["num_buckets"]):
        received.update(torch.load(io.BytesIO(out_q.get(timeout=TIMEOUT_S))))
    return stats, calls, client.load_formats, received


def _assert_bitwise(named, received):
    assert sorted(received) == sorted(n for n, _ in named)
    for name, t in named:
        got = received[name]
        assert got.dtype == t.dtype and got.shape == t.shape, (name, got.dtype, got.shape)
        assert _bytes(got) == _bytes(t), name


@pytest.mark.multirank
def test_mixed_dtype_bucket_arrives_bitwise_in_one_broadcast(link, monkeypatch):
    named = _mixed_bucket()
    stats, calls, formats, received = _sync(link, named, 2**20, True, monkeypatch)
    assert stats["num_buckets"] == 1 and stats["num_broadcasts"] == 1
    assert calls == [torch.uint8] and formats == [flat_bucket.LOAD_FORMAT]
    _assert_bitwise(named, received)


@pytest.mark.multirank
def test_one_broadcast_per_bucket_over_several_buckets(link, monkeypatch):
    named = [(f"{n}_{k}", t) for k in range(3) for n, t in _mixed_bucket()]
    stats, calls, formats, received = _sync(link, named, 64, True, monkeypatch)
    assert stats["num_buckets"] > 3
    assert len(calls) == stats["num_buckets"] == stats["num_broadcasts"] == len(formats)
    _assert_bitwise(named, received)


@pytest.mark.multirank
def test_per_tensor_path_still_sends_one_broadcast_per_tensor(link, monkeypatch):
    named = _mixed_bucket()
    stats, calls, formats, received = _sync(link, named, 2**20, False, monkeypatch)
    assert len(calls) == len(named) == stats["num_broadcasts"] and formats == [None]
    _assert_bitwise(named, received)


def test_layout_errors_name_the_tensor():
    with pytest.raises(ValueError, match=r"shapes\[1\].*byte 6.*item size 4"):
        flat_bucket.byte_ranges([torch.bfloat16, torch.float32], [[3], [2]])
    with pytest.raises(ValueError, match="40 bytes, the shapes and dtypes need 44"):
        flat_bucket.unpack(torch.zeros(40, dtype=torch.uint8), [torch.float32], [[11]])
