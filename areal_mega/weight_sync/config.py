"""Weight-sync configuration (the `weight_sync:` section of a run config) and the rendezvous address."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class WeightSyncConfig:
    """How the trainer sends weights to the generation servers.

    backend: "auto" (nccl with CUDA, gloo without), "nccl" or "gloo".
    master_addr / master_port: where each pipeline stage's sender hosts its
    group's TCPStore, as the servers must dial it. "auto" (default): loopback
    when every server is on this host (URL host 127.x / localhost / ::1),
    else this host's address on the route to the servers (what they can
    reach); an explicit loopback address with a server elsewhere is refused.
    Port 0 = pick a free one; a fixed port P gives stage s the port P + s.
    Must differ from the trainer's own torch.distributed port.
    group_name: the PrefixStore / group name the servers join under; with
    PP > 1 stage s uses `{group_name}_pp{s}`.
    bucket_bytes: bytes per /update_weights_from_distributed call (slime: 512 MB).
    flatten_buckets: one broadcast per bucket, its tensors packed into one
    uint8 buffer (SGLang's load_format "flattened_bucket", read by SGLang
    0.5.23, the reference server and vLLM's "areal" engine); false: one
    broadcast per tensor (SGLang servers without that format).
    pause_mode: SGLang /pause_generation mode around an update ("abort",
    "retract", "in_place") or "none".
    timeout_s: rendezvous, broadcast and weight-update HTTP time-out (per call).
    """

    backend: str = "auto"
    master_addr: str = "auto"
    master_port: int = 0
    group_name: str = "weight_update_group"
    bucket_bytes: int = 512 * 2**20
    flatten_buckets: bool = True
    pause_mode: str = "abort"
    timeout_s: float = 300.0

    def __post_init__(self):
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"weight_sync.backend must be auto, nccl or gloo, got {self.backend!r}")
        if not self.master_addr:
            raise ValueError("weight_sync.master_addr must be 'auto' or an address the servers can reach")
        if not 0 <= self.master_port < 65536:
            raise ValueError(f"weight_sync.master_port must be in [0, 65535], got {self.master_port}")
        if not self.group_name:
            raise ValueError("weight_sync.group_name must not be empty")
        if self.bucket_bytes < 1:
            raise ValueError(f"weight_sync.bucket_bytes must be >= 1, got {self.bucket_bytes}")
        if self.pause_mode not in ("abort", "retract", "in_place", "none"):
            raise ValueError(f"weight_sync.pause_mode must be abort, retract, in_place or none, got {self.pause_mode!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"weight_sync.timeout_s must be > 0, got {self.timeout_s}")

    def resolved_backend(self) -> str:
        import torch

        if self.backend == "auto":
            return "nccl" if torch.cuda.is_available() else "gloo"
        return self.backend


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (a name is looked up; an unknown name is not loopback)."""
    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def url_host(url: str) -> str:
    host = urlsplit(url if "//" in url else f"http://{url}").hostname
    if not host:
        raise ValueError(f"server URL {url!r} has no host")
    return host


def route_address(host: str) -> str:
    """This host's own address on the route to `host` (a UDP `connect` sends no packet)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host.strip("[]"), 9))
        return s.getsockname()[0]


def resolve_master_addr(master_addr: str, server_urls: list[str]) -> str:
    """The rendezvous address the servers in `server_urls` are told to dial (see WeightSyncConfig).

    Raises ValueError naming the servers when they could not reach the address.
    """
    remote = [u for u in server_urls if not is_loopback(url_host(u))]
    if master_addr != "auto":
        if remote and is_loopback(master_addr):
            raise ValueError(
                f"weight_sync.master_addr={master_addr} is a loopback address, but server(s) {remote} are not "
                f"on this host: they would dial their own loopback. Set weight_sync.master_addr to an address of "
                f"this host that they can reach, or to auto")
        return master_addr
    if not remote:
        return "127.0.0.1"
    host = url_host(remote[0])
    try:
        addr = route_address(host)
    except OSError as e:
        raise ValueError(f"weight_sync.master_addr=auto: no route from this host ({socket.gethostname()}) to server "
                         f"{remote[0]} ({e}); set weight_sync.master_addr explicitly") from e
    if is_loopback(addr):
        raise ValueError(f"weight_sync.master_addr=auto resolved to loopback {addr} on the route to {remote[0]}; "
                         f"set weight_sync.master_addr to an address of this host that the servers can reach")
    return addr
