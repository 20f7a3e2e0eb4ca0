"""Checkpoints under DistributedDataParallel (2 CPU processes, torchrun, gloo): ``Model.load`` restores every rank
(weights, optimizer and each rank's own random state), and ``torchrun --max-restarts 1`` with a ``ModelCheckpoint``
callback resumes after a rank is killed mid-training and ends with the weights of an uninterrupted run, bit for bit
(see ddp_resume_worker.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env, worker_output

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_resume_worker.py")


def _torchrun(out: Path, *args: str, restarts: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--max-restarts", str(restarts), "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(WORKER), str(out), *args]
    return subprocess.run(cmd, env=worker_env(60), capture_output=True, text=True, timeout=480)


@needs_gloo
def test_load_restores_every_rank(tmp_path: Path) -> None:
    run = _torchrun(tmp_path, "load")
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"load_rank{r}.pt") for r in (0, 1)]
    for r, result in enumerate(ranks):
        for key, value in saved["distributions"].items():  # the checkpoint's weights on every rank
            assert torch.equal(result["loaded"][key], value), (r, key)
        assert result["rng_restored"], r  # each rank its own random state (the ranks' states differ)
        assert result["optimizer_step"] and set(result["optimizer_step"]) == {3}, r
        for key, value in result["original"].items():  # and training goes on as the saved model's does
            assert torch.equal(result["continued"][key], value), (r, key)
            assert torch.equal(value, ranks[0]["original"][key]), (r, key)  # replicas identical
    assert not torch.equal(saved["rng_ranks"][0]["torch"], saved["rng_ranks"][1]["torch"])


@needs_gloo
def test_torchrun_restart_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    run = _torchrun(whole, "resume")
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    run = _torchrun(killed, "resume", "kill", restarts=1)
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    assert (killed / "killed").exists()  # rank 1 did die once
    for r in (0, 1):
        a, b = torch.load(whole / f"resume_rank{r}.pt"), torch.load(killed / f"resume_rank{r}.pt")
        assert (a["restarts"], a["resumed_from"], a["step"]) == (0, 0, 12)
        assert (b["restarts"], b["resumed_from"], b["step"]) == (1, 2, 12)  # restarted, from epoch 2's checkpoint
        for key, value in a["state"].items():
            assert torch.equal(b["state"][key], value), (r, key)  # the uninterrupted run's weights, bit for bit


def test_a_restarted_process_group_gets_its_own_namespace_of_the_launchers_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun keeps one store across restarts: after a restart the process group's keys go under a prefix naming
    the attempt, so no process reads an address written by the previous attempt."""
    import datetime

    import torch.distributed as tdist

    from pyro_dgm.models.distributed import _has_key, _restart_store

    port = _free_port()
    server = tdist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=datetime.timedelta(seconds=10))
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _restart_store(datetime.timedelta(seconds=10)) is None  # the first attempt: torch's own set-up
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    store = _restart_store(datetime.timedelta(seconds=10))
    store.set("rank_0", "new address")
    assert server.get("pyro_dgm/attempt_1/rank_0") == b"new address"
    server.set("rank_1", "the previous attempt's address")
    assert not _has_key(store, "rank_1")  # (Store.check, or a moment's wait where torch 2.1 has none)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # rank 0 hosts a fresh store each attempt
    assert _restart_store(datetime.timedelta(seconds=10)) is None
