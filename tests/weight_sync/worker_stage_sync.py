"""One plain process (world size 1, gloo) syncs a HF model to two reference servers with `StageWeightSync`,
the way the trainer's controller does at PP = 1, and records what the sync did on the wire.

`python -m tests.weight_sync.worker_stage_sync --model DIR --out FILE.json` with RANK=0, WORLD_SIZE=1,
MASTER_ADDR, MASTER_PORT in the environment. Three syncs (versions 1-3), then the second server is
SIGKILLed and a fourth sync runs; then a sync whose pause every live server refuses (its pause call
carries an unknown mode). Written to FILE.json:

  ports: per sync 1-3, the local ports of this process's TCP connections to the servers afterwards
  probes: /health probes made by the weight sync's client, per sync 1-4
  lost: sync 4's "rollout/servers_lost"; urls: the servers kept after it
  versions: each server's weight version after syncs 1-3, and the survivor's after sync 4
  refused: the WeightSyncError of the refused pause
"""
import argparse
import asyncio
import json
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from areal_mega.platform import init_distributed
from areal_mega.rollout.client import GenerationClient
from areal_mega.rollout.launcher import launch_servers
from areal_mega.rollout.protocol import Call
from areal_mega.rollout.protocol_sglang import SGLangProtocol
from areal_mega.weight_sync import StageLayout, StageWeightSync, WeightSyncConfig, WeightSyncError

PROBES = [0]


def counting_probe(original):
    async def probe(self, server):
        PROBES[0] += 1
        return await original(self, server)

    return probe


def server_ports(urls: list[str]) -> list[int]:
    """Local ports of this process's established TCP connections to the servers' ports, sorted."""
    targets = {int(u.rsplit(":", 1)[1]) for u in urls}
    return sorted(c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                  if c.raddr and c.raddr.port in targets and c.status == psutil.CONN_ESTABLISHED)


def versions(urls: list[str]) -> list[str]:
    async def ask():
        client = GenerationClient(urls)
        try:
            return await client.get_weight_versions()
        finally:
            await client.close()

    return asyncio.run(ask())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    init_distributed()
    GenerationClient._probe = counting_probe(GenerationClient._probe)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    named = [(n, p.detach()) for n, p in model.named_parameters()]
    result = {"ports": [], "probes": [], "versions": []}
    with launch_servers(args.model, 2) as pool:
        layout = StageLayout(0, 1, True, True, dist.group.WORLD)
        sync = StageWeightSync(layout, WeightSyncConfig(backend="gloo", timeout_s=120.0), server_backend="reference")
        sync.join(pool.urls)
        for version in ("1", "2", "3"):
            PROBES[0] = 0
            sync.sync(iter(named), version)
            result["probes"].append(PROBES[0])
            result["ports"].append(server_ports(pool.urls))
            result["versions"].append(versions(pool.urls))
        pool.procs[1].kill()
        pool.procs[1].wait()
        PROBES[0] = 0
        stats = sync.sync(iter(named), "4")
        result["probes"].append(PROBES[0])
        result["lost"], result["urls"] = stats.get("rollout/servers_lost"), sync.urls
        result["versions"].append(versions(sync.urls))
        SGLangProtocol.pause = lambda self, mode: Call("/pause_generation", {"mode": "no-such-mode"})
        try:
            sync.sync(iter(named), "5")
        except WeightSyncError as e:
            result["refused"] = str(e)
        sync.close()
    Path(args.out).write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
