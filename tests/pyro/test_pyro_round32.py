"""Thirty-second round (probe p381): a loss evaluated inside a caller's ``pyro.plate`` over copies of the model
(``pyro.plate("outer", K, dim=-2)``): its draws have the copies' dim before the rows, and the log-densities keep
both (one value per copy and row, as a hand-written Pyro twin's), where they were summed over the rows."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import ELBO, KullbackLeibler, LogProb
from pyro_dgm.models import Model

X, Z, N, K = 4, 2, 3, 2


def _vae() -> tuple:
    torch.manual_seed(0)
    dec, enc = nn.Linear(Z, X), nn.Linear(X, 2 * Z)

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = dec

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.net(z))}

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = enc

        def forward(self, x: torch.Tensor) -> dict:
            h = self.net(x)
            return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 0.3}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p_{prior}")
    x = torch.rand(N, X).round()
    return P(), Q(), prior, x, dec, enc


def _twin_terms(z: torch.Tensor, x: torch.Tensor, dec: nn.Module, enc: nn.Module) -> tuple:
    """log p(x|z), log p(z), log q(z|x) by hand, one value per copy and row."""
    h = enc(x)
    q = dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 0.3).to_event(1)
    return (dist.Bernoulli(torch.sigmoid(dec(z))).to_event(1).log_prob(x),
            dist.Normal(0., 1.).expand([Z]).to_event(1).log_prob(z), q.log_prob(z))


@pytest.mark.parametrize("term", ["elbo", "mc_kl", "log_prob"])
def test_a_loss_inside_a_plate_of_copies_keeps_one_value_per_copy_and_row(term: str) -> None:
    """The draws inside ``plate("outer", K, dim=-2)`` are ``(K, N, Z)``; the loss is ``(K, N)``, the hand-written
    twin's values of those draws (before: ``(K,)``, their sum over the rows, so ``.mean()`` was N times the
    per-row loss)."""
    p, q, prior, x, dec, enc = _vae()
    loss = {"elbo": ELBO(p * prior, q), "mc_kl": KullbackLeibler(q, prior, analytical=False),
            "log_prob": LogProb(q)}[term]

    def program() -> torch.Tensor:
        with pyro.plate("outer", K, dim=-2):
            z = q.sample({"x": x})["z"] if term == "log_prob" else None
            return loss.eval({"x": x} if z is None else {"x": x, "z": z})

    trace = poutine.trace(program).get_trace()
    ours, z = trace.nodes["_RETURN"]["value"], trace.nodes["z"]["value"]
    assert z.shape == (K, N, Z)
    log_px, log_pz, log_qz = _twin_terms(z, x, dec, enc)
    twin = {"elbo": log_px + log_pz - log_qz, "mc_kl": log_qz - log_pz, "log_prob": log_qz}[term]
    assert ours.shape == (K, N)
    torch.testing.assert_close(ours, twin)
    assert not torch.allclose(ours.mean(), twin.sum(-1).mean())  # (the row sum would differ)


def test_a_factor_of_the_loss_inside_the_plate_weighs_each_copy_and_row_once() -> None:
    """``pyro.factor("elbo", elbo.eval(...))`` inside the plate: its log-density is the twin's sum over copies and
    rows (a ``(K,)`` value there was broadcast to ``(K, K)``: each copy's row sum counted K times)."""
    p, q, prior, x, dec, enc = _vae()
    elbo = ELBO(p * prior, q)

    def model() -> None:
        with pyro.plate("outer", K, dim=-2):
            pyro.factor("elbo", elbo.eval({"x": x}))

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    log_px, log_pz, log_qz = _twin_terms(z, x, dec, enc)
    torch.testing.assert_close(trace.nodes["elbo"]["log_prob"], log_px + log_pz - log_qz)


def test_model_train_inside_the_plate_minimizes_the_mean_over_copies_and_rows() -> None:
    """``Model(-elbo.mean())`` trained inside the plate: the loss is minus the mean of the twin's ``(K, N)`` values
    of the step's draws (it was N times that: 3.6 times the loss without the plate)."""
    p, q, prior, x, dec, enc = _vae()
    elbo = ELBO(p * prior, q)
    model = Model(-elbo.mean(), distributions=[p, q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0})
    pyro.set_rng_seed(1)
    with pyro.plate("outer", K, dim=-2):
        loss = model.train({"x": x})
    pyro.set_rng_seed(1)
    with pyro.plate("outer", K, dim=-2):
        z = q.sample({"x": x}, reparam=True)["z"]  # the step's draws: the same seed, the same first draw
    log_px, log_pz, log_qz = _twin_terms(z, x, dec, enc)
    torch.testing.assert_close(torch.as_tensor(loss), -(log_px + log_pz - log_qz).mean().detach())


def test_outside_plates_a_sample_shape_draw_still_scores_to_pixyz_shape() -> None:
    """Without plates, Pixyz's rule stands: a ``sample_shape`` draw ``[L, B, Z]`` scores to ``[L]`` (the sum over
    the batch), also for an ``(L, B)`` value that happens to have the sizes of a plate opened elsewhere."""
    p, q, prior, x, dec, enc = _vae()
    z = torch.randn(K, N, Z)
    lp = q.get_log_prob({"x": x, "z": z})
    assert lp.shape == (K,)
    torch.testing.assert_close(lp, _twin_terms(z, x, dec, enc)[2].sum(-1))
    with pyro.plate("rows", N):  # a plate at dim -1: the data plate's, not copies
        assert q.get_log_prob({"x": x, "z": z[0]}).shape == (N,)


@pytest.mark.parametrize("copies", [2, N])
def test_a_value_of_rows_given_in_a_plate_of_copies_is_summed_over_its_features(copies: int) -> None:
    """``z`` of ``(N, Z)`` given (not drawn) in a plate of K copies is N rows: one value per row, also when K = N
    (probe p385: the first fix took the rows for the copies there and kept the features, ``(N, Z)``)."""
    p, q, prior, x, dec, enc = _vae()
    z = torch.randn(N, Z)
    with pyro.plate("outer", copies, dim=-2):
        lp = q.get_log_prob({"x": x, "z": z})
    torch.testing.assert_close(lp, _twin_terms(z, x, dec, enc)[2])


@pytest.mark.parametrize("particles", [2, N])
def test_a_factor_of_get_log_prob_under_vectorized_particles_and_a_data_plate_is_plain_pyros(particles: int) -> None:
    """A plain-Pyro model ``pyro.factor("f", p.get_log_prob({"x": x, "z": z}))`` inside its data plate, under
    ``Trace_ELBO(vectorize_particles=True)``: ``z`` is ``(P, N, Z)`` and the score ``(P, N)``, the twin's ``dist``
    score and loss (probe p386: the rows were summed, ``(P,)``: Pyro's shape error for P other than N, and for
    P = N a loss of 73.8 where the twin's is 15.6)."""
    p, q, prior, x, dec, enc = _vae()

    def make(ours: bool) -> tuple:
        def model(x: torch.Tensor) -> None:
            with pyro.plate("data", N):
                z = pyro.sample("z", dist.Normal(torch.zeros(N, Z), 1.).to_event(1))
                lp = (p.get_log_prob({"x": x, "z": z}) if ours
                      else dist.Bernoulli(torch.sigmoid(dec(z))).to_event(1).log_prob(x))
                pyro.factor("f", lp)

        def guide(x: torch.Tensor) -> None:
            h = enc(x)
            with pyro.plate("data", N):
                pyro.sample("z", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 0.3).to_event(1))
        return model, guide

    losses = []
    for ours in (True, False):
        pyro.set_rng_seed(3)
        elbo = pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
        losses.append(elbo.differentiable_loss(*make(ours), x))
    torch.testing.assert_close(losses[0], losses[1])
    with pyro.plate("copies", particles, dim=-2), pyro.plate("data", N):
        z = pyro.sample("z", dist.Normal(torch.zeros(N, Z), 1.).to_event(1))
        torch.testing.assert_close(p.get_log_prob({"x": x, "z": z}),
                                   dist.Bernoulli(torch.sigmoid(dec(z))).to_event(1).log_prob(x))


def _scalar_elbo() -> tuple:
    """A VAE of scalar variables (no feature dim): x of (N,) is N scalars, as Pixyz reads a value of one dim."""
    torch.manual_seed(0)
    x = torch.randn(N)
    p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="prior")
    q = Normal(loc="x", scale=torch.tensor(0.5), var=["z"], cond_var=["x"], name="q")

    def twin(z: torch.Tensor) -> torch.Tensor:
        return dist.Normal(z, 1.).log_prob(x) + dist.Normal(0., 1.).log_prob(z) - dist.Normal(x, 0.5).log_prob(z)
    return ELBO(p * prior, q), x, twin


def test_a_scalar_variables_draws_in_plates_of_copies_and_data_keep_one_value_per_copy_and_row() -> None:
    """A scalar latent's draws ``(K, N)`` inside the plate of copies and a data plate of N: the ELBO is the twin's
    ``(K, N)``, and a ``pyro.factor`` of it weighs each copy and row once (probe p388: ``(K,)``, the row sums, met
    Pyro's shape error in the data plate). Without a data plate a scalar variable's ``(K, N)`` is summed over its
    second dim, as outside plates (design.md: nothing says which dim holds the rows there)."""
    elbo, x, twin = _scalar_elbo()

    def model() -> None:
        with pyro.plate("outer", K, dim=-2), pyro.plate("data", N, dim=-1):
            pyro.factor("elbo", elbo.eval({"x": x}))

    for traced in (True, False):
        if traced:
            trace = poutine.trace(model).get_trace()
            trace.compute_log_prob()
            z = trace.nodes["z"]["value"]
            assert z.shape == (K, N)
            torch.testing.assert_close(trace.nodes["elbo"]["log_prob"], twin(z))
        else:
            with pyro.plate("outer", K, dim=-2), pyro.plate("data", N, dim=-1):
                assert elbo.eval({"x": x}).shape == (K, N)


def test_an_enumerating_pyro_term_evaluates_without_gradients_as_pyros_loss() -> None:
    """A ``PyroELBO`` term of ``TraceEnum_ELBO`` evaluated without gradients (under ``torch.no_grad()``, by
    ``Model.test``, by ``SVI.evaluate_loss``): Pyro's ``loss`` of the same seed (probe p392: Pyro's
    ``differentiable_loss`` refuses a value without a gradient, "ELBO is cannot be differentiated")."""
    from pyro.infer import SVI, TraceEnum_ELBO

    from pyro_dgm.losses import PyroELBO

    torch.manual_seed(0)
    dec = nn.Linear(2, 3)

    def model(x: torch.Tensor) -> None:
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(torch.tensor([0.3, 0.7])), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z) + y.unsqueeze(-1).float(), 1.).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        m = pyro.param("m", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m, 1.).to_event(1))

    x = torch.randn(5, 3)
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    ref = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    term = PyroELBO(model, guide, elbo=TraceEnum_ELBO(max_plate_nesting=1))
    pyro.set_rng_seed(1)
    with torch.no_grad():
        assert abs(float(term.eval({"x": x})) - ref) < 1e-5
    model_ = Model(term, distributions=[Normal(loc=0., scale=1., var=["w"])], optimizer=torch.optim.SGD,
                   optimizer_params={"lr": 0.0})
    pyro.set_rng_seed(1)
    assert abs(float(model_.test({"x": x})) - ref) < 1e-5
    svi = SVI(model, guide, pyro.optim.SGD({"lr": 0.0}), loss=term)
    pyro.set_rng_seed(1)
    assert abs(svi.evaluate_loss(x=x) - ref) < 1e-5
