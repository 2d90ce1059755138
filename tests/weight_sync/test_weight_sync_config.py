"""The weight-update rendezvous address (weight_sync.master_addr) and the errors that name it."""
import time

import pytest

from areal_mega.platform.device import free_port
from areal_mega.platform.process_group import RendezvousError, join_group
from areal_mega.weight_sync import config as wconfig
from areal_mega.weight_sync.broadcast import WeightSyncError, init_weight_update_group
from areal_mega.weight_sync.config import WeightSyncConfig, is_loopback, resolve_master_addr

LOCAL = ["http://127.0.0.1:30000", "http://localhost:30001", "http://[::1]:30002"]
REMOTE = "http://10.20.30.40:30000"


def test_default_is_auto_and_empty_is_refused():
    assert WeightSyncConfig().master_addr == "auto"
    with pytest.raises(ValueError, match="weight_sync.master_addr"):
        WeightSyncConfig(master_addr="")


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("10.20.30.40", "192.0.2.7"))


def test_auto_is_loopback_when_every_server_is_local():
    assert resolve_master_addr("auto", LOCAL) == "127.0.0.1"


def test_auto_takes_this_hosts_address_on_the_route_to_a_remote_server(monkeypatch):
    asked = []
    monkeypatch.setattr(wconfig, "route_address", lambda host: asked.append(host) or "10.20.0.5")
    assert resolve_master_addr("auto", LOCAL[:1] + [REMOTE]) == "10.20.0.5"
    assert asked == ["10.20.30.40"]


def test_route_address_is_a_real_local_address():
    assert wconfig.route_address("127.0.0.1") == "127.0.0.1"


def test_auto_refuses_a_loopback_route_or_no_route(monkeypatch):
    monkeypatch.setattr(wconfig, "route_address", lambda host: "127.0.0.1")
    with pytest.raises(ValueError, match=r"resolved to loopback 127\.0\.0\.1 on the route to http://10\.20\.30\.40"):
        resolve_master_addr("auto", [REMOTE])

    def unreachable(host):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(wconfig, "route_address", unreachable)
    with pytest.raises(ValueError, match=r"no route .* to server http://10\.20\.30\.40:30000 .*master_addr"):
        resolve_master_addr("auto", [REMOTE])


def test_explicit_loopback_with_a_remote_server_is_refused():
    with pytest.raises(ValueError) as err:
        resolve_master_addr("127.0.0.1", LOCAL[:1] + [REMOTE])
    text = str(err.value)
    assert "weight_sync.master_addr=127.0.0.1 is a loopback address" in text and REMOTE in text
    assert LOCAL[0] not in text  # only the servers that could not reach it are named
    assert resolve_master_addr("127.0.0.1", LOCAL) == "127.0.0.1"
    assert resolve_master_addr("10.20.0.5", [REMOTE]) == "10.20.0.5"


def test_rendezvous_error_names_address_port_and_rank():
    port = free_port()  # nobody hosts a store there
    t0 = time.monotonic()
    with pytest.raises(RendezvousError) as err:
        join_group("127.0.0.1", port, 1, 2, "weight_update_group_pp1", "gloo", timeout_s=2.0)
    assert time.monotonic() - t0 < 60
    text = str(err.value)
    assert f"tcp://127.0.0.1:{port}" in text and "rank 1 of 2" in text and "'weight_update_group_pp1'" in text


def test_group_error_names_address_port_and_the_server_that_failed():
    """A server that does not answer: the error names the rendezvous tried and the server's URL."""
    port, dead = free_port(), f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(WeightSyncError) as err:
        init_weight_update_group([dead], "127.0.0.1", port, "weight_update_group", "gloo", timeout_s=5.0)
    assert time.monotonic() - t0 < 30
    text = str(err.value)
    assert f"tcp://127.0.0.1:{port}" in text and dead in text
