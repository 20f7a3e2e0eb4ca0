"""Data-parallel training on DistributedDataParallel: 2 CPU processes (torchrun, gloo, 127.0.0.1) keep identical
weights and match one process (an ML classifier trained by fit, a VAE, a GAN, an IterativeLoss model); a failing rank
ends the job, named, within the timeout."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as tdist

from ddp_scenarios import SCENARIOS, train_reference, weights
from dgm_model_helpers import digits, make_ml

from pyro_dgm.models import distributed as dist_utils

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_worker.py")
needs_gloo = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(),
                                reason="torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(timeout_s: int = 120) -> dict[str, str]:
    """The workers' environment: one thread, loopback, a collective timeout that bounds a hang, and Python's
    fault handler (a worker that aborts in native code, e.g. gloo's ``terminate called``, prints its Python stack)."""
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=os.getcwd(),
                PYRO_DGM_DIST_TIMEOUT=str(timeout_s), PYTHONFAULTHANDLER="1")


def worker_output(text: str, n: int = 3000) -> str:
    """The last ``n`` characters of a worker's output without the fault handler's list of extension modules (one
    long line after "Fatal Python error", which would fill the tail and hide the stack that precedes it)."""
    return "\n".join(line for line in text.splitlines() if "Extension modules:" not in line)[-n:]


def write_data(out: Path) -> dict[str, torch.Tensor]:
    x, y = digits()
    data = {"x": x[:96], "y": y[:96]}
    torch.save(data, out / "data.pt")
    return data


def check_ranks_match_one_process(out: Path, data: dict[str, torch.Tensor]) -> None:
    """The two ranks' results (files written by ddp_worker.py) are identical, bit for bit, and equal one process."""
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    for name in SCENARIOS:  # VAE, GAN, IterativeLoss: replicas identical and equal to one process replaying them
        reference = weights(train_reference(name))
        start = weights(SCENARIOS[name][0](100))
        for key, value in ranks[0][name].items():
            assert torch.equal(value, ranks[1][name][key]), (name, key)
            assert torch.allclose(value, reference[key], atol=1e-5, rtol=0), (name, key)
        assert any(not torch.allclose(v, start[k], atol=1e-4) for k, v in reference.items()), name  # it trained
    _check_ml(ranks, data)


@needs_gloo
def test_two_processes_stay_identical_and_match_one_process(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    run = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=480)
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    check_ranks_match_one_process(tmp_path, data)


def _faulty_job(tmp_path: Path, mode: str, collective_timeout: int) -> tuple[str, float]:
    """Run the two-rank worker in ``mode`` (``fail``, ``hang``) with that collective timeout (seconds); return its
    output and how long it took (the subprocess itself is bounded at 480 s)."""
    write_data(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path), mode]
    start = time.monotonic()
    run = subprocess.run(cmd, env=worker_env(collective_timeout), capture_output=True, text=True, timeout=480)
    text = run.stdout + run.stderr
    assert run.returncode != 0, text[-3000:]
    return text, time.monotonic() - start


@needs_gloo
def test_a_failing_rank_ends_the_job_naming_it(tmp_path: Path) -> None:
    text, elapsed = _faulty_job(tmp_path, "fail", 30)
    assert "rank 1 fails on purpose" in text and "rank      : 1" in text.replace("rank:", "rank      :"), text[-3000:]
    assert elapsed < 480, elapsed  # start-up plus seconds: far below torch's default 30-minute collective timeout


@needs_gloo
def test_a_hanging_rank_ends_the_job_within_the_timeout_naming_it(tmp_path: Path) -> None:
    text, elapsed = _faulty_job(tmp_path, "hang", 10)
    assert "Timed out" in text, text[-3000:]  # rank 0's collective waited 10 s, then raised
    assert "rank(s) 1 did not reach it within the timeout" in text, text[-3000:]  # and named the hanging rank
    assert elapsed < 240, elapsed  # start-up, the 10 s timeout and at most 10 s to name it; rank 1 sleeps 1000 s


def _check_ml(ranks: list, data: dict[str, torch.Tensor]) -> None:
    """Model.fit with 2 ranks (global batches of 32 rows, shuffled) equals Model.fit in one process."""
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
    assert dist_utils.wrap(torch.nn.Linear(1, 1)) is None and not dist_utils.setup_from_env()
    dist_utils.shutdown()  # nothing to shut down
    assert make_ml()._dgm_ddp is None  # one process: no wrapper, train() evaluates the loss directly


def test_timeout_is_bounded_and_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime
    monkeypatch.delenv("PYRO_DGM_DIST_TIMEOUT", raising=False)
    assert dist_utils._timeout(None) == dist_utils.DEFAULT_TIMEOUT == datetime.timedelta(minutes=5)
    assert dist_utils._timeout(12) == datetime.timedelta(seconds=12)
    monkeypatch.setenv("PYRO_DGM_DIST_TIMEOUT", "7.5")
    assert dist_utils._timeout(None) == datetime.timedelta(seconds=7.5)
    monkeypatch.setenv("PYRO_DGM_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="PYRO_DGM_DIST_TIMEOUT must be a number of seconds, got 'soon'"):
        dist_utils._timeout(None)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        dist_utils._timeout(-1)
