"""Data-parallel training: 2 CPU processes (torchrun, gloo, 127.0.0.1) keep identical weights and match one process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as tdist
from dgm_model_helpers import digits, make_ml

from pyro_dgm.models import distributed as dist_utils

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(), reason="torch.distributed with gloo")
def test_two_processes_stay_identical_and_match_one_process(tmp_path: Path) -> None:
    x, y = digits()
    data = {"x": x[:96], "y": y[:96]}
    torch.save(data, tmp_path / "data.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]

    # the replicas are identical, bit for bit (rank 1 started from other weights: rank 0's were broadcast)
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    for r in ranks:
        r["history"].pop("time")
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["step"] == 6

    # one process, same initial weights (seed 0) and the same shuffled global batches of 32 rows
    pyro.set_rng_seed(0)
    single = make_ml(lr=0.1)
    history = single.fit(data, epochs=2, batch_size=32, shuffle=True, test_data=data, progress=False)
    assert ranks[0]["history"]["train_loss"] == pytest.approx(history["train_loss"], rel=1e-5)
    assert ranks[0]["history"]["test_loss"] == pytest.approx(history["test_loss"], rel=1e-5)
    for key, value in single.distributions.state_dict().items():
        assert torch.allclose(ranks[0]["state"][key], value, atol=1e-5), key
    start = make_ml(lr=0.1)  # and training did move the weights
    assert not torch.allclose(start.distributions[0].net.weight, ranks[0]["state"]["0.net.weight"], atol=1e-2)


def test_helpers_are_no_ops_without_a_process_group() -> None:
    assert not dist_utils.is_distributed() and dist_utils.world_size() == 1 and dist_utils.rank() == 0
    batch = {"x": torch.arange(5), "n": 3}
    assert dist_utils.shard(batch) == batch
    halves = [dist_utils.shard(batch, n=2, r=r)["x"].tolist() for r in (0, 1)]
    assert halves == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="has 1 rows, fewer than the 2 processes"):
        dist_utils.shard({"x": torch.ones(1)}, n=2, r=0)
    t = torch.ones(2)
    assert dist_utils.all_reduce_mean(t) is t and dist_utils.broadcast_tensor(t) is t
