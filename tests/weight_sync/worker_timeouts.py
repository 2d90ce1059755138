"""Two plain processes (no torchrun agent to kill the survivor, as on another node): rank 0 dies or hangs
while rank 1 waits for it in the engine's gloo object group.

`python -m tests.weight_sync.worker_timeouts --model DIR --mode kill|hang|slow --wait forward|join --timeout-s T
[--default-timeout-s D]` with RANK, WORLD_SIZE=2, MASTER_ADDR, MASTER_PORT in the environment. Both ranks
build the `Engine` (engine.collective_timeout_s = T; the default group's time-out D, 600 s by default) and a
`StageWeightSync`; then rank 0 SIGKILLs itself (kill), sleeps for an hour (hang) or sleeps 3 D and then
joins with no servers (slow: a controller that takes longer than the default group's time-out to start its
servers) while rank 1 waits where it waits in a run: in `Engine.forward` for the controller's
batch (through a rollout), or in `StageWeightSync.join` for the server URLs (while the controller
starts servers on resume). Rank 1 prints WAITING just before; its error ends the process.
"""
import argparse
import os
import signal
import time

import torch.distributed as dist

from areal_mega.engine.config import EngineConfig
from areal_mega.engine.engine import Engine
from areal_mega.platform import init_distributed
from areal_mega.weight_sync import StageLayout, StageWeightSync, WeightSyncConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=["kill", "hang", "slow"], required=True)
    ap.add_argument("--wait", choices=["forward", "join"], required=True)
    ap.add_argument("--timeout-s", type=float, required=True)
    ap.add_argument("--default-timeout-s", type=float, default=600.0)
    args = ap.parse_args()
    init_distributed(timeout_s=args.default_timeout_s)
    engine = Engine(EngineConfig(model_path=args.model, dtype="fp32", collective_timeout_s=args.timeout_s))
    t = engine.topo
    layout = StageLayout(t.pp_rank, t.pp_size, t.is_sync_rank, t.dp_rank == 0, engine.object_group)
    sync = StageWeightSync(layout, WeightSyncConfig())
    if dist.get_rank() == 0 and args.mode == "slow":
        time.sleep(3 * args.default_timeout_s)
        sync.join(None)
        return
    if dist.get_rank() == 0:
        time.sleep(2.0)
        if args.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)
    print("WAITING", flush=True)
    if args.wait == "forward":
        engine.forward(None)
    else:
        sync.join(None)
    print("rank 1: the wait returned", flush=True)


if __name__ == "__main__":
    main()
