"""TP=2 (vocabulary split over two gloo ranks on 127.0.0.1) equals TP=1: values and grads."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from areal_mega.kernels import fused_linear_logprobs, vocab_parallel_logprobs

T, V, H, TEMP = 29, 202, 24, 0.8  # V_local = 101 per rank
PADDED_VOCABS = (V - 3, V // 2)  # 3 padding rows on rank 1; rank 1 all padding
# gloo ranks hold CPU tensors: the Triton backend runs there only under the interpreter
BACKENDS = ("torch", "triton") if os.environ.get("TRITON_INTERPRET") == "1" else ("torch",)


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(T, V, generator=g)
    hidden = torch.randn(T, H, generator=g)
    weight = 0.4 * torch.randn(V, H, generator=g)
    targets = torch.randint(0, V, (T,), generator=g)
    targets[:4] = torch.tensor([0, V // 2 - 1, V // 2, V - 1])  # ids at both sides of the split
    g_lp, g_ent = torch.randn(T, generator=g), torch.randn(T, generator=g)
    return logits, hidden, weight, targets, g_lp, g_ent


def _run(logits, hidden, weight, targets, g_lp, g_ent, group, backend):
    """{name: tensor} of forward values and grads of both functions on this rank's inputs."""
    logits = logits.clone().requires_grad_(True)
    lp, ent = vocab_parallel_logprobs(logits, targets, group, TEMP, backend, token_chunk=8, vocab_chunk=40)
    (g_logits,) = torch.autograd.grad([lp, ent], [logits], [g_lp, g_ent])
    hidden = hidden.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    f_lp, f_ent = fused_linear_logprobs(hidden, weight, targets, group, TEMP, backend, token_chunk=8,
                                        vocab_chunk=40)
    g_hidden, g_weight = torch.autograd.grad([f_lp, f_ent], [hidden, weight], [g_lp, g_ent])
    out = dict(lp=lp, ent=ent, g_logits=g_logits, f_lp=f_lp, f_ent=f_ent, g_hidden=g_hidden, g_weight=g_weight)
    for vocab in PADDED_VOCABS:  # the last V - vocab weight rows are TP padding, excluded inside the kernel
        out.update(_padded(hidden, weight, targets % vocab, g_lp, g_ent, group, backend, vocab))
    return out


def _padded(hidden, weight, targets, g_lp, g_ent, group, backend, vocab):
    """Fused values and grads with the weight's rows of id >= vocab as padding (group=None:
    the reference, a weight of exactly `vocab` rows)."""
    if group is None:
        weight = weight[:vocab]
    hidden = hidden.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    lp, ent = fused_linear_logprobs(hidden, weight, targets, group, TEMP, backend, token_chunk=8, vocab_chunk=40,
                                    vocab_size=None if group is None else vocab)
    g_hidden, g_weight = torch.autograd.grad([lp, ent], [hidden, weight], [g_lp, g_ent])
    return {f"p{vocab}_lp": lp, f"p{vocab}_ent": ent, f"p{vocab}_g_hidden": g_hidden, f"p{vocab}_g_weight": g_weight}


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        logits, hidden, weight, targets, g_lp, g_ent = _inputs()
        v_local = V // world
        shard = slice(rank * v_local, (rank + 1) * v_local)
        results = {b: _run(logits[:, shard], hidden, weight[shard], targets, g_lp, g_ent, dist.group.WORLD, b)
                   for b in BACKENDS}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multirank
def test_tp2_equals_tp1(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    logits, hidden, weight, targets, g_lp, g_ent = _inputs()
    for backend in BACKENDS:
        full = _run(logits, hidden, weight, targets, g_lp, g_ent, None, backend)
        for r in range(2):
            got = ranks[r][backend]
            for name in ("lp", "ent", "f_lp", "f_ent", "g_hidden"):  # the same on every rank
                torch.testing.assert_close(got[name], full[name], rtol=1e-5, atol=1e-6, msg=f"{backend} {name}")
        for name in ("g_logits", "g_weight"):  # each rank holds its vocabulary shard
            dim = 1 if name == "g_logits" else 0
            joined = torch.cat([ranks[0][backend][name], ranks[1][backend][name]], dim=dim)
            torch.testing.assert_close(joined, full[name], rtol=1e-5, atol=1e-6, msg=f"{backend} {name}")
        assert (full["g_logits"][:, V // 2:].abs().sum() > 0) and (full["g_logits"][:, :V // 2].abs().sum() > 0)
        for vocab in PADDED_VOCABS:
            for name in ("lp", "ent", "g_hidden"):
                key = f"p{vocab}_{name}"
                for r in range(2):
                    torch.testing.assert_close(ranks[r][backend][key], full[key], rtol=1e-5, atol=1e-6,
                                               msg=f"{backend} {key}")
            key = f"p{vocab}_g_weight"
            joined = torch.cat([ranks[0][backend][key], ranks[1][backend][key]])
            torch.testing.assert_close(joined[:vocab], full[key], rtol=1e-5, atol=1e-6, msg=f"{backend} {key}")
            assert (joined[vocab:] == 0).all(), f"{backend} {key}: padding rows get no gradient"
