"""Pyro's SVI and Pyro-side parameters under DistributedDataParallel: 2 CPU processes (torchrun, gloo) keep identical
weights and match one process within 1e-5, for a pyro_dgm loss and for ``joint.model``/``q.guide`` with
``Trace_ELBO`` under ``SVI`` (through ``DistributedELBO``), and for a Model whose loss holds an autoguide (its
parameters created at the first step, at random on each rank). See ddp_svi_scenarios.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from ddp_svi_scenarios import SCENARIOS, reference, start
from test_ddp import _free_port, needs_gloo, worker_env

from pyro_dgm.models.distributed import DistributedELBO, PyroParams

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_svi_worker.py")


@needs_gloo
def test_svi_and_pyro_params_on_two_processes_match_one_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    run = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=480)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"svi_rank{r}.pt") for r in (0, 1)]
    for name in SCENARIOS:
        expected, before = reference(name), start(name)
        assert sorted(ranks[0][name]) == sorted(expected), name
        for key, value in ranks[0][name].items():
            assert torch.equal(value, ranks[1][name][key]), (name, key)  # replicas identical, bit for bit
            gap = (value - expected[key]).abs().max()
            assert torch.allclose(value, expected[key], atol=1e-5, rtol=0), (name, key, gap)
        moved = [k for k, v in expected.items() if k in before and not torch.allclose(v, before[k], atol=1e-4)]
        assert moved, name  # it trained
    assert any(k.startswith("store.AutoNormal.") for k in ranks[0]["model_autoguide"])  # the autoguide's, averaged


def test_distributed_elbo_is_its_elbo_in_one_process() -> None:
    """Without a process group, ``DistributedELBO(elbo)`` takes the step ``elbo`` takes, bit for bit."""
    from ddp_svi_scenarios import batches, vae, weights

    results = []
    for wrap in (False, True):
        q, p, prior = vae(7)
        elbo = DistributedELBO(Trace_ELBO(), global_loss="sum") if wrap else Trace_ELBO()
        svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
        pyro.set_rng_seed(3)
        losses = [svi.step(**b) for b in batches()]
        results.append((losses, weights(q, p)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(v, results[1][1][k]) for k, v in results[0][1].items())
    assert DistributedELBO(Trace_ELBO()).replicated is None


def test_distributed_elbo_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="elbo must be a pyro.infer.ELBO"):
        DistributedELBO(lambda m, g: 0.0)
    with pytest.raises(ValueError, match="global_loss must be 'mean' or 'sum', got 'max'"):
        DistributedELBO(Trace_ELBO(), global_loss="max")
    with pytest.raises(TypeError, match="networks must be torch modules, got int"):
        DistributedELBO(Trace_ELBO(), [torch.nn.Linear(1, 1), 3])


def test_pyro_params_holds_the_stores_tensors() -> None:
    pyro.clear_param_store()
    pyro.param("a.b", torch.ones(2))
    pyro.param("s", torch.ones(3), constraint=torch.distributions.constraints.positive)
    store = pyro.get_param_store()
    held = PyroParams(dict(store.named_parameters()))
    assert held.names == ["a.b", "s"]
    assert [p is store.get_param(n).unconstrained() for n, p in zip(held.names, held.parameters())] == [True, True]
    with pytest.raises(TypeError, match="PyroParams: 'x' must be a tensor, got float"):
        PyroParams({"x": 1.0})
    pyro.clear_param_store()
