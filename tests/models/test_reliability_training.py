"""Issue 13 items 3, 4, 8 and issue 12 item 5: empty batches, a ``.named`` top node, non-finite gradients, and
Pyro-side parameters (an autoguide in a ``PyroELBO`` term) trained by ``Model`` exactly as ``SVI`` trains them.

Where we deliberately differ from Pixyz 0.3.3 (a mean over an empty batch, a step on NaN gradients), a differential
test runs the same program under both and shows Pixyz's value next to our error.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as pdist
import pytest
import torch
from dgm_fixtures import SqrtLoc
from dgm_model_helpers import Dot, make_vae
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import KullbackLeibler, Loss, Parameter, PyroELBO
from pyro_dgm.models import Model, NonFiniteGradientError, NonFiniteLossError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm  # noqa: E402


# ------------------------------------------------------------------------------------------------ empty batches (13.3)
def _empty_program(reduction: str, train: bool) -> Any:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Bernoulli, Normal
        from pixyz.losses import Expectation, KullbackLeibler, LogProb
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.l = nn.Linear(3, 2)

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"loc": self.l(x), "scale": torch.ones(x.shape[0], 2)}

        class P(Bernoulli):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.l = nn.Linear(2, 3)

            def forward(self, z):  # type: ignore[no-untyped-def]
                return {"probs": torch.sigmoid(self.l(z))}

        q, p = Q(), P()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        per_row = KullbackLeibler(q, prior) - Expectation(q, LogProb(p))
        loss = per_row.mean() if reduction == "mean" else per_row.sum()
        x = torch.zeros(0, 3)
        if train:
            return Model(loss, distributions=[p, q]).train({"x": x}).detach()
        return loss.eval({"x": x}).detach()
    return program


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_empty_batch_mean_is_nan_under_pixyz_and_a_value_error_naming_the_variable_here(train: bool) -> None:
    """Pixyz returns NaN (a mean over no rows, which is no number: training on it takes a step on nothing); we
    raise ValueError naming the empty variable and its shape, before any weight changes."""
    ref = run_pixyz(_empty_program("mean", train))
    assert math.isnan(float(ref))
    with pytest.raises(ValueError, match=r"empty batch.*'x' has shape \(0, 3\)"):
        run_pyro_dgm(_empty_program("mean", train))


def test_empty_batch_sum_is_zero_as_in_pixyz() -> None:
    """A sum over no rows is 0 (a valid value, e.g. the labelled part of a batch that has none): kept."""
    ref, ours = run_pixyz(_empty_program("sum", False)), run_pyro_dgm(_empty_program("sum", False))
    assert float(ref) == 0.0
    assert_same(ref, ours)


def test_fit_on_zero_rows_names_the_variable() -> None:
    model = make_vae()
    before = [t.clone() for t in model.distributions.state_dict().values()]
    with pytest.raises(ValueError, match=r"train_data is empty: variable 'x' has 0 rows \(shape \(0, 64\)\)"):
        model.fit({"x": torch.zeros(0, 64)}, epochs=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match=r"empty Dataset"):
        model.fit(torch.utils.data.TensorDataset(torch.zeros(0, 64)), progress=False)
    with pytest.raises(ValueError, match=r"'x' has shape \(0, 64\)"):  # a loader that yields an empty batch
        model.fit([{"x": torch.zeros(0, 64)}], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.distributions.state_dict().values()))
    assert model.step == 0


# ------------------------------------------------------------------------------------ a .named top node (13.4)
def test_a_named_top_node_is_recorded_as_a_term() -> None:
    p = Normal(loc=0., scale=1., var=["x"])
    x = torch.zeros(4, 1)
    half_log_2pi = 0.5 * math.log(2 * math.pi)  # -log N(0 | 0, 1)
    value, terms = (-p.log_prob()).mean().named("nll").eval({"x": x}, return_terms=True)
    assert list(terms) == ["nll"] and torch.equal(terms["nll"], value)
    assert float(value) == pytest.approx(half_log_2pi)
    value, terms = ((-p.log_prob()).mean() + 1.0).named("total").eval({"x": x}, return_terms=True)
    assert list(terms) == ["total"] and float(terms["total"]) == pytest.approx(half_log_2pi + 1.0)


def test_the_non_finite_error_of_a_named_top_node_names_the_term() -> None:
    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], name="p")
            self.loc = nn.Parameter(torch.zeros(1))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": self.loc, "scale": torch.ones(1)}

    p = P()
    model = Model((-p.log_prob()).mean().named("nll"), distributions=[p])
    with pytest.raises(NonFiniteLossError, match=r"non-finite term\(s\): 'nll'"):
        model.train({"x": torch.full((2, 1), math.inf)})


# ------------------------------------------------------------------------------ non-finite gradients (13.8)
_Sqrt = SqrtLoc  # p(x|y) = N(sqrt(w y), 1): an infinite derivative in w at w y = 0


def _nan_gradient_program() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Normal
    from pixyz.models import Model

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, y):  # type: ignore[no-untyped-def]
            return {"loc": torch.sqrt(self.w * y), "scale": torch.ones_like(y)}

    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    loss = model.train({"x": torch.ones(3, 1), "y": torch.zeros(3, 1)})  # finite loss, d sqrt(w y)/dw = inf * 0
    return loss.detach(), p.w.detach().clone()


def test_non_finite_gradient_corrupts_the_weights_under_pixyz_and_raises_here_with_weights_untouched() -> None:
    """Pixyz steps on a NaN gradient: the loss is finite (1.4189) and the weight silently becomes NaN. We raise
    before the optimizer steps, naming the step and the distribution, and leave the weight at 1."""
    loss, w = run_pixyz(_nan_gradient_program)
    assert math.isfinite(float(loss)) and torch.isnan(w).all()
    with pytest.raises(NonFiniteGradientError, match=r"step 1 with a finite training loss 1\.41894.*p\(x\|y\): w "
                                                     r"\(1 of 1 values\).*weights are unchanged"):
        run_pyro_dgm(_nan_gradient_program)


@pytest.mark.parametrize("clip", [None, 1.0], ids=["no-clip", "clip-norm"])
def test_non_finite_gradient_leaves_weights_and_optimizer_state_untouched(clip: float | None) -> None:
    torch.manual_seed(0)
    p = _Sqrt()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer_params={"lr": 0.1}, clip_grad_norm=clip)
    good = {"x": torch.ones(3, 1), "y": torch.ones(3, 1)}
    model.train(good)
    w, state = p.w.detach().clone(), {k: v.clone() for k, v in model.optimizer.state[p.w].items()}
    with pytest.raises(NonFiniteGradientError, match="step 2"):
        model.train({"x": torch.ones(3, 1), "y": torch.zeros(3, 1)})
    assert torch.equal(p.w, w) and model.step == 1
    assert all(torch.equal(model.optimizer.state[p.w][k], v) for k, v in state.items())


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))


@pytest.mark.parametrize("clip", [None, 1.0], ids=["no-clip", "clip-norm"])
def test_huge_finite_gradients_are_not_an_error(clip: float | None) -> None:
    """Only non-finite gradients raise: gradients of 3e38 (finite float32, whose 2-norm overflows) step as in
    torch: without clipping w moves by lr * 3e38; clipped by that infinite norm they become 0 (clip_grad_norm_)."""
    k = torch.full((2,), 3e38)
    mod = _Linear()
    model = Model(Dot(mod), distributions=[mod], optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-40},
                  clip_grad_norm=clip)
    model.train({"k": k})
    ref = nn.Parameter(torch.zeros(2))
    ref.grad = k.clone()
    if clip:
        torch.nn.utils.clip_grad_norm_([ref], clip)
    with torch.no_grad():
        ref -= 1e-40 * ref.grad
    assert torch.equal(mod.w.detach(), ref.detach()) and model.step == 1
    assert bool((mod.w != 0).all()) is (clip is None)


def test_training_steps_are_unchanged_by_the_gradient_check() -> None:
    """The check adds no arithmetic: a VAE trained with it gives the weights of a hand-written torch loop."""
    x = (torch.rand(32, 64) > 0.5).float()
    pyro.set_rng_seed(0)
    model = make_vae()
    for _ in range(3):
        model.train({"x": x})
    pyro.set_rng_seed(0)
    ref = make_vae()
    for _ in range(3):
        ref.optimizer.zero_grad()
        ref.loss_cls.eval({"x": x}).backward()
        ref.optimizer.step()
    for a, b in zip(model.distributions.state_dict().values(), ref.distributions.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------- Pyro-side parameters (issue 12 item 5)
def _pyro_model(x: torch.Tensor) -> None:
    loc = pyro.sample("loc", pdist.Normal(0., 1.))
    scale = pyro.sample("s", pdist.LogNormal(0., 1.))
    with pyro.plate("data", len(x)):
        pyro.sample("x", pdist.Normal(loc, scale), obs=x)


def _svi_run(x: torch.Tensor, steps: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(_pyro_model, AutoNormal(_pyro_model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(steps)]
    return losses, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


@pytest.mark.parametrize("optimizer", ["torch", "pyro"])
def test_model_trains_an_autoguide_exactly_as_svi(optimizer: str) -> None:
    """``Model(PyroELBO(model, AutoNormal(model)))``: the autoguide's parameters, created lazily at the first step,
    are trained, and after 5 steps every one equals SVI's, bit for bit (same seed, same Adam)."""
    x = torch.randn(20, generator=torch.Generator().manual_seed(1)) + 2.0
    svi_losses, svi_params = _svi_run(x, 5)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    opt: Any = (dict(optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05}) if optimizer == "torch" else
                dict(optimizer=pyro.optim.Adam({"lr": 0.05})))
    model = Model(PyroELBO(_pyro_model, AutoNormal(_pyro_model)), **opt)
    losses = [float(model.train({"x": x})) for _ in range(5)]
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    assert sorted(params) == sorted(svi_params) and len(params) == 4
    for k in svi_params:
        assert torch.equal(params[k], svi_params[k]), k
    assert losses == pytest.approx(svi_losses, rel=1e-6)
    assert len(model.parameters()) == 4


def test_a_stale_gradient_on_a_pyro_parameter_does_not_leak_into_its_first_step() -> None:
    """A network that a Pyro guide registers (``pyro.module``) is adopted at the first step, after the evaluation;
    a gradient left on it from earlier use is cleared then (as ``zero_grad`` clears the networks' before each step),
    so the weights after two steps equal those of a run that started without it."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    enc = nn.Linear(3, 2)
    start = {k: v.clone() for k, v in enc.state_dict().items()}

    def model(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pdist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", pdist.Normal(z[:, None].expand(-1, 3), 1.0).to_event(1), obs=x)

    def guide(x):  # type: ignore[no-untyped-def]
        pyro.module("enc", enc)
        h = enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pdist.Normal(h[:, 0], nn.functional.softplus(h[:, 1]) + 0.1))

    def run(stale: bool) -> list[torch.Tensor]:
        pyro.clear_param_store()
        enc.load_state_dict(start)
        for p in enc.parameters():
            p.grad = torch.full_like(p, 1e3) if stale else None
        m = Model(PyroELBO(model, guide), distributions=[], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 1e-2})
        for s in range(2):
            pyro.set_rng_seed(s)
            m.train({"x": x})
        return [p.detach().clone() for p in enc.parameters()]

    clean = run(False)
    assert not torch.equal(clean[0], start["weight"])  # it trained
    for a, b in zip(run(True), clean):
        assert torch.equal(a, b)


def test_autoguide_term_next_to_pyro_dgm_terms_trains_both() -> None:
    """A PyroELBO(model, AutoNormal) term plus a pyro_dgm term: the networks of ``distributions`` and the autoguide
    are both trained; a zero-weight pyro_dgm term leaves the autoguide trajectory equal to SVI's."""
    x = torch.randn(20, generator=torch.Generator().manual_seed(1)) + 2.0
    _, svi_params = _svi_run(x, 3)

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], name="p")
            self.loc = nn.Parameter(torch.zeros(1))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": self.loc, "scale": torch.ones(1)}

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    p = P()
    prior = Normal(loc=1., scale=1., var=["y"], name="r")
    loss = PyroELBO(_pyro_model, AutoNormal(_pyro_model)) + 0.0 * KullbackLeibler(p, prior).mean()
    model = Model(loss, distributions=[p], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05})
    for _ in range(3):
        model.train({"x": x})
    for k, v in svi_params.items():
        assert torch.equal(pyro.get_param_store()[k].detach(), v), k
    assert len(model.optimizer.param_groups) == 2  # the networks, then the autoguide's parameters


def test_parameters_created_by_a_custom_term_are_trained() -> None:
    """Any loss that creates Pyro parameters during a step (``pyro.param`` in a term) gets them trained."""
    class Quadratic(Loss):
        def __init__(self) -> None:
            super().__init__(["t"])

        @property
        def latex(self) -> str:
            return "(a - t)^2"

        def forward(self, values, **kwargs):  # type: ignore[no-untyped-def]
            a = pyro.param("quad_a", torch.zeros(()))
            return (a - values["t"]) ** 2

    pyro.clear_param_store()
    model = Model(Quadratic() + 0.0 * Parameter("c"), distributions=[nn.Linear(1, 1)], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.25})
    for _ in range(2):
        model.train({"t": torch.tensor(2.0), "c": 0.0})
    # a <- a - 0.25 * 2 (a - 2): 0 -> 1 -> 1.5
    assert float(pyro.param("quad_a").detach()) == 1.5
