"""DDP with 2 CPU processes (torchrun, gloo): a batch norm's running statistics stay identical across the replicas
(rank 0's, as DDP's next forward would make them) and training equals one process replaying what DDP does; loaders
of different lengths on the processes are refused by name; ``Model.save`` under ``if rank == 0:`` ends with an error
naming the rank that did not call it, within the timeout (see ddp_round4_worker.py)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddp_round4_models import (BATCH, batches, build_bn_model, build_iterative_model, build_param_model,
                               series_batches)
from test_ddp import _free_port, needs_gloo, worker_env, worker_output

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round4_worker.py")


def _torchrun(out: Path, mode: str, timeout_s: int = 60) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out), mode]
    start = time.monotonic()
    run = subprocess.run(cmd, env=worker_env(timeout_s), capture_output=True, text=True, timeout=480)
    return run, time.monotonic() - start


def _replay_two_ranks() -> tuple[dict[str, torch.Tensor], float]:
    """One process taking DDP's steps: each rank normalizes its half of the global batch with the half's statistics,
    the gradients are averaged, and the running statistics are those rank 0's half gave."""
    model = build_bn_model(seed=0)
    p = model.distributions[0]
    data = batches()
    for _ in range(2):  # 2 epochs
        for batch in data:
            halves = [{k: v[r * BATCH // 2:(r + 1) * BATCH // 2] for k, v in batch.items()} for r in (0, 1)]
            start = {k: b.clone() for k, b in p.named_buffers()}
            grads = []
            for r in (1, 0):  # rank 0's half last: its statistics are the ones kept
                for k, b in p.named_buffers():
                    b.copy_(start[k])
                model.optimizer.zero_grad()
                model.loss_cls.eval(halves[r]).backward()
                grads.append([w.grad.clone() for w in model.parameters()])
            for w, g1, g0 in zip(model.parameters(), *grads):
                w.grad = (g0 + g1) / 2
            model.optimizer.step()
    whole = {k: torch.cat([b[k] for b in data]) for k in ("x", "y")}
    return {k: v.clone() for k, v in p.state_dict().items()}, float(model.test(whole))


@needs_gloo
def test_batch_norm_statistics_are_identical_on_every_rank_and_training_replays_ddp(tmp_path: Path) -> None:
    run, _ = _torchrun(tmp_path, "batchnorm")
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    ranks = [torch.load(tmp_path / f"bn_rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["state"].items():  # weights and running statistics, bit for bit
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert ranks[0]["test"] == ranks[1]["test"]  # so a test on any rank gives the same number
    state, test = _replay_two_ranks()
    for key, value in state.items():
        assert torch.allclose(ranks[0]["state"][key].to(value.dtype), value, atol=1e-5, rtol=0), key
    assert ranks[0]["test"] == pytest.approx(test, rel=1e-5)
    start = build_bn_model(seed=0).distributions[0].state_dict()
    assert not torch.allclose(start["net.1.running_mean"], state["net.1.running_mean"])  # the statistics moved


@needs_gloo
def test_loaders_of_different_lengths_are_refused_naming_each_count(tmp_path: Path) -> None:
    run, elapsed = _torchrun(tmp_path, "uneven")
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert "train_data gives a different number of batches on each process (8 on rank 0, 7 on rank 1)" in text, \
        text[-3000:]
    assert elapsed < 240, elapsed  # no collective waited for the timeout


@needs_gloo
def test_save_on_rank_0_only_names_the_rank_that_did_not_call_it(tmp_path: Path) -> None:
    run, elapsed = _torchrun(tmp_path, "save_rank0", timeout_s=10)
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert "ML.save under torch.distributed: rank(s) 1 did not call it within 10 s" in text, text[-3000:]
    assert "not under `if rank == 0:`" in text, text[-3000:]
    assert not (tmp_path / "ckpt.pt").exists()  # nothing half-written
    assert elapsed < 240, elapsed  # start-up, the 10 s timeout and the exit


@needs_gloo
def test_a_parameter_created_at_the_first_step_trains_as_in_one_process(tmp_path: Path) -> None:
    # the first step runs twice on every rank (to cover the new parameter); the random state after it must be one
    # process's, whose step drew the initial value too, so the next epoch's shuffle and the draws that follow agree
    run, _ = _torchrun(tmp_path, "pyro_param")
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    ranks = [torch.load(tmp_path / f"param_rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    import pyro
    model = build_param_model(seed=0)
    whole = {k: torch.cat([b[k] for b in batches()]) for k in ("x", "y")}
    model.fit(whole, epochs=2, batch_size=8, shuffle=True, progress=False)
    single = dict(model.distributions[0].state_dict(), b=pyro.param("b").detach())
    for key, value in single.items():
        assert torch.allclose(ranks[0]["state"][key], value, atol=1e-5, rtol=0), key
    assert torch.equal(ranks[0]["rng"], torch.get_rng_state())  # rank 0's generator is one process's
    assert single["net.weight"].abs().max() < 10  # a stable run (the comparison means something)


@needs_gloo
def test_an_iterative_loss_trains_on_halves_of_the_sequences_as_in_one_process(tmp_path: Path) -> None:
    run, _ = _torchrun(tmp_path, "iterative")
    assert run.returncode == 0, worker_output(run.stdout) + worker_output(run.stderr)
    ranks = [torch.load(tmp_path / f"iter_rank{r}.pt") for r in (0, 1)]
    model = build_iterative_model(seed=0)
    history = model.fit(series_batches(), epochs=2, test_data=series_batches(), progress=False)
    for key, value in model.distributions.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        assert torch.allclose(ranks[0]["state"][key], value, atol=1e-5, rtol=0), key
    assert ranks[0]["history"]["train_loss"] == pytest.approx(history["train_loss"], rel=1e-5)
    assert ranks[0]["history"]["test_loss"] == pytest.approx(history["test_loss"], rel=1e-5)
    start = build_iterative_model(seed=0).distributions[1].net.weight
    assert not torch.allclose(start, model.distributions[1].net.weight)  # it trained
