"""A step that raises on one process only, under DistributedDataParallel (2 CPU processes, torchrun, gloo; see
ddp_round6_worker.py), and what a failed step leaves behind in one process.

A probe found that an error raised on one rank only inside ``Model.train``'s step (a network's error, a validation
``ValueError`` on a NaN in that rank's slice), caught by the script, left the ranks one collective apart: the other
rank's step averaged its gradients with the failed rank's *next* step, silently, and a bare gloo timeout came later;
``SVI`` with ``DistributedELBO`` did the same, and on a NaN loss on one rank it did not warn (Pyro's ELBOs do) while
every rank's weights became NaN. In one process: a ``backward`` that raised under ``SVI`` left the gradients of the
networks it had reached, which added into the next step's; and a failed first step of a Model with an autoguide left
the autoguide's parameters and prototype trace, so the step taken again drew other numbers than a clean run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoNormal
from torch import nn

from test_ddp import _free_port, needs_gloo, worker_env

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import E, KullbackLeibler, LogProb, PyroELBO
from pyro_dgm.models import Model, NonFiniteLossError
from pyro_dgm.models.checkpoint import set_rng_state

WORKER = Path(__file__).with_name("ddp_round6_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' results of one torchrun of the worker (all scenarios), with its output under ``"text"``."""
    out = tmp_path_factory.mktemp("round6")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out)]
    run = subprocess.run(cmd, env=worker_env(45), capture_output=True, text=True, timeout=110)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert "Timed out" not in text, text[-3000:]  # no collective waited for another process
    return [dict(torch.load(out / f"round6_rank{r}.pt"), text=text) for r in (0, 1)]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.other_processes  # (its workers: not rerun under --validate-args=off)
@needs_gloo
@pytest.mark.parametrize("mode, error", [("raise", "RuntimeError"), ("badval", "ValueError"),
                                         ("timeout_text", "RuntimeError")])
def test_a_model_step_raising_on_one_rank_raises_on_every_rank_and_none_takes_it(ranks: list[dict[str, Any]],
                                                                                   mode: str, error: str) -> None:
    skip, run = [r["model_skip"] for r in ranks], [r[f"model_{mode}"] for r in ranks]
    name, _, notes, _ = run[1]["steps"][1]  # rank 1 raises its own error, noting that the others were told
    assert name == error
    assert any("Model.train (step 2) raised on rank 1 (of 2) before the processes synchronized" in n
               and "raised RankFailedError, so none took the step" in n for n in notes), notes
    name, message, _, failed = run[0]["steps"][1]  # rank 0 names rank 1 and the step
    assert name == "RankFailedError" and failed == [1]
    assert ("Model.train (step 2) raised on rank(s) 1 (of 2) before the processes synchronized, so rank 0 did not "
            "take the step either; the original error is on rank(s) 1") in message
    for r in (0, 1):  # the other steps went as in the run that skipped step 2 on both ranks: weights and buffers
        assert run[r]["steps"][0] == skip[r]["steps"][0] and run[r]["steps"][2:] == skip[r]["steps"][2:]
        assert run[r]["step"] == skip[r]["step"] == 3
        assert _same(run[r]["state"], skip[r]["state"])
    assert _same(run[0]["state"], run[1]["state"])
    assert not torch.equal(run[0]["state"]["0.net.1.running_mean"], torch.zeros(4))  # the statistics moved


@pytest.mark.other_processes  # (its workers: not rerun under --validate-args=off)
@needs_gloo
@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_a_discriminator_step_raising_on_one_rank_raises_on_every_rank_and_none_takes_it(
        ranks: list[dict[str, Any]], mode: str) -> None:
    """A third probe: the discriminator's step had no synchronization of its own failures, so rank 0 took its next
    two steps against rank 1's (paired with different batches) before a gloo timeout; a NaN output on rank 1 was
    refused by the range check there, before the NaN synchronization."""
    skip, run = [r["gan_skip"] for r in ranks], [r[f"gan_{mode}"] for r in ranks]
    name, _, notes, _ = run[1]["steps"][1]
    assert name in ("RuntimeError", "OutOfRangeError")
    assert any("loss_train (discriminator step 2) raised on rank 1 (of 2)" in n for n in notes), notes
    name, message, _, failed = run[0]["steps"][1]
    assert name == "RankFailedError" and failed == [1] and "(discriminator step 2) raised on rank(s) 1" in message
    for r in (0, 1):
        assert run[r]["steps"][0] == skip[r]["steps"][0] and run[r]["steps"][2:] == skip[r]["steps"][2:]
        assert run[r]["d_steps"] == skip[r]["d_steps"] == 3
        assert _same(run[r]["state"], skip[r]["state"])


@pytest.mark.other_processes  # (its workers: not rerun under --validate-args=off)
@needs_gloo
def test_a_test_step_raising_on_one_rank_raises_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    name, _, notes, _ = ranks[1]["model_raise"]["test"]
    assert name == "RuntimeError" and any("Model.test_step raised on rank 1 (of 2)" in n for n in notes), notes
    name, message, _, failed = ranks[0]["model_raise"]["test"]
    assert name == "RankFailedError" and failed == [1] and "Model.test_step raised on rank(s) 1 (of 2)" in message
    # and the training step after it pairs its collectives: the replicas stay identical
    assert _same(ranks[0]["model_raise"]["after_test"], ranks[1]["model_raise"]["after_test"])


@pytest.mark.other_processes  # (its workers: not rerun under --validate-args=off)
@needs_gloo
def test_an_svi_step_raising_on_one_rank_raises_on_every_rank_and_none_takes_it(ranks: list[dict[str, Any]]) -> None:
    skip, run = [r["svi_skip"] for r in ranks], [r["svi_raise"] for r in ranks]
    name, _, notes, _ = run[1]["steps"][1]
    assert name == "RuntimeError"
    assert any("SVI.step with DistributedELBO(BatchMean) raised on rank 1 (of 2)" in n for n in notes), notes
    name, message, _, failed = run[0]["steps"][1]
    assert name == "RankFailedError" and failed == [1]
    assert "SVI.step with DistributedELBO(BatchMean) raised on rank(s) 1 (of 2)" in message
    for r in (0, 1):
        assert run[r]["steps"][0] == skip[r]["steps"][0] and run[r]["steps"][2:] == skip[r]["steps"][2:]
        assert _same(run[r]["params"], skip[r]["params"])


@pytest.mark.other_processes  # (its workers: not rerun under --validate-args=off)
@needs_gloo
def test_an_svi_loss_nan_on_one_rank_warns_and_is_nan_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for r in (0, 1):
        steps = ranks[r]["svi_nan"]["steps"]
        assert steps[0][0] == "ok" and steps[0][1] == steps[0][1] and not steps[0][2]  # a finite first step
        kind, value, caught = steps[1]
        assert kind == "ok" and value != value, (r, value)  # NaN on both ranks (rank 0's own loss is finite)
        assert any(w.startswith("Encountered NaN: loss (non-finite on rank(s) 1 of 2") for w in caught), caught


# ------------------------------------------------------------------------------------------------ one process
class _Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Linear(6, 4)
        self.fail = False

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.net(x)
        if self.fail:  # a backward that raises once the decoder's gradients are computed
            self.fail = False

            def hook(grad: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("the encoder's backward fails")
            h.register_hook(hook)
        return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 1e-3}


class _Decoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(2, 6)
        self.fail = False

    def forward(self, z):  # type: ignore[no-untyped-def]
        if self.fail:
            self.fail = False
            raise RuntimeError("the decoder fails")
        h = self.net(z)
        return {"loc": h, "scale": torch.ones_like(h)}


def _vae() -> tuple[_Encoder, _Decoder, Normal, Any]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    q, p = _Encoder(), _Decoder()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return q, p, prior, (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()


X = torch.randn(48, 6, generator=torch.Generator().manual_seed(1))


def _weights(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def test_a_backward_that_raises_under_svi_leaves_no_gradient_behind() -> None:
    def run(fail: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
        q, p, prior, loss = _vae()
        svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss)
        losses = []
        for s in range(4):
            if s == 2 and fail:
                q.fail = True
                with pytest.raises(RuntimeError, match="the encoder's backward fails"):
                    svi.step(x=X[:16])
                # the decoder's gradients were computed before the encoder's backward raised: none is left
                assert all(t.grad is None or not t.grad.any() for t in list(q.parameters()) + list(p.parameters()))
            pyro.set_rng_seed(100 + s)
            losses.append(svi.step(x=X[16 * (s % 3):16 * (s % 3) + 16]))
        return losses, _weights(q, p)

    clean, failed = run(False), run(True)
    assert clean[0] == failed[0]  # the steps after the failure are the clean run's
    assert _same(clean[1], failed[1])


def test_a_backward_that_raises_under_svi_leaves_the_users_own_gradients_alone() -> None:
    """A third probe: the gradients cleared after a failed backward were those of every tensor the graph reaches,
    so a user's own network feeding the data (trained by its own optimizer, its gradient accumulated before the
    step) and an input with ``requires_grad`` lost theirs; Pyro's ``Trace_ELBO`` leaves them. Only the param
    store's parameters (SVI's) are cleared now."""
    q, p, prior, loss = _vae()
    extractor = nn.Linear(6, 6)
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), loss)
    svi.step(x=X[:16])  # the networks are in the param store
    extractor(X[:16]).pow(2).mean().backward()  # the user's own accumulated gradient
    before = extractor.weight.grad.clone()
    x = X[16:32].clone().requires_grad_(True)
    (2 * x.sum()).backward()
    q.fail = True
    with pytest.raises(RuntimeError, match="the encoder's backward fails"):
        svi.step(x=extractor(x))
    assert torch.equal(extractor.weight.grad, before) and torch.equal(x.grad, torch.full_like(x, 2.0))
    assert all(t.grad is None for t in p.parameters())  # the decoder's (SVI's), which the failed backward filled


def _probe(x: torch.Tensor) -> None:
    w = pyro.sample("w", pdist.Normal(torch.zeros(2), 1.).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pdist.Normal(x[:, :2] @ w, 1.), obs=x[:, 2])


def _resume_random_states(model: Model) -> None:
    """Go on from the random states a checkpoint saved now records (a failed step's start), as a resumed run does:
    the live generators keep the failed step's draws (a retry in the same process draws anew, as under Pixyz)."""
    import io

    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True)["rng"])


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_failed_first_step_with_an_autoguide_is_taken_again_as_a_clean_run(where: str) -> None:
    # the decoder raises in its forward (before the autoguide's new parameters join the optimizer) or the encoder's
    # backward raises (after they did); the autoguide's initial values are drawn from the model (init_to_sample)
    def run(fail: bool) -> tuple[list[float], dict[str, torch.Tensor], int]:
        q, p, _, loss = _vae()
        guide = AutoNormal(_probe, init_loc_fn=pyro.infer.autoguide.initialization.init_to_sample)
        model = Model(PyroELBO(_probe, guide, input_var=["x"]) + loss, distributions=[q, p],
                      optimizer_params={"lr": 0.05})
        groups = len(model.optimizer.param_groups)
        pyro.set_rng_seed(1)
        if fail:
            (p if where == "forward" else q).fail = True
            with pytest.raises(RuntimeError, match="fails"):
                model.train({"x": X[:16]})
            assert guide.prototype_trace is None and not list(pyro.get_param_store().keys())
            assert len(model.optimizer.param_groups) == groups and len(model.parameters()) == 4
            _resume_random_states(model)
        losses = [float(model.train({"x": X[:16]})) for _ in range(3)]
        store = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()
                 if k.startswith("AutoNormal")}
        return losses, dict(_weights(q, p), **store), len(model.optimizer.param_groups)

    clean, failed = run(False), run(True)
    assert clean[0] == failed[0] and clean[2] == failed[2] == 2
    assert _same(clean[1], failed[1]) and "AutoNormal.locs.w" in clean[1]


def test_a_failed_first_step_of_an_autoguide_alone_leaves_no_optimizer() -> None:
    # the model's only parameters are the autoguide's: its optimizer is built at the first step, after the loss is
    # evaluated, and a NaN loss then raises; the step taken again on other data is the clean run's
    def run(fail: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
        pyro.clear_param_store()
        guide = AutoNormal(_probe, init_loc_fn=pyro.infer.autoguide.initialization.init_to_sample)
        model = Model(PyroELBO(_probe, guide, input_var=["x"]), optimizer_params={"lr": 0.05})
        pyro.set_rng_seed(1)
        if fail:
            bad = X[:16].clone()
            bad[0, 2] = float("nan")
            with pyro.validation_enabled(False), pytest.raises(NonFiniteLossError, match="at step 1"), \
                    pytest.warns(UserWarning, match="Encountered NaN: loss"):  # (Pyro's)
                model.train({"x": bad})
            assert model.optimizer is None and not model.parameters() and guide.prototype_trace is None
            _resume_random_states(model)
        losses = [float(model.train({"x": X[:16]})) for _ in range(3)]
        return losses, {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}

    clean, failed = run(False), run(True)
    assert clean[0] == failed[0] and _same(clean[1], failed[1])
