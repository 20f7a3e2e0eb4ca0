"""Adversarial terms: closed forms at the optimal discriminator, the discriminator's step, ownership, Wasserstein
clipping and gradient penalty, checkpoint state, and errors.

Monte Carlo tolerances: a value here is a mean over N independent samples, so its standard error is
std(per-sample terms) / sqrt(N), estimated from reference draws of the same distributions; we accept 5 standard
errors (a false alarm has probability below 1e-6 for a roughly normal mean).

The 1-D setting: the data are N(0, 1) and the generator is N(1, 1) (``x = z + shift``, ``z ~ N(0, 1)``, shift = 1). The
optimal discriminator d*(x) = p_data(x) / (p_data(x) + p(x)) is sigmoid(-x + 1/2): a one-unit logistic regression
with weight -1 and bias 1/2, so it can be set exactly.
"""
from __future__ import annotations

import io
import math
from typing import Iterator

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Deterministic, EmpiricalDistribution, Normal
from pyro_dgm.losses import (AdversarialJensenShannon, AdversarialJSDivergence, AdversarialKullbackLeibler,
                             AdversarialWassersteinDistance, KullbackLeibler)

N = 100_000


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small networks: threads only contend for the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Shift(Deterministic):
    """x = z + shift, a generator with one parameter."""

    def __init__(self, shift: float = 1.0) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.shift = nn.Parameter(torch.tensor([shift]))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"x": z + self.shift}


class Logistic(Deterministic):
    """d(t|x) = sigmoid(w x + b) (or the linear score w x + b with ``sigmoid=False``)."""

    def __init__(self, w: list[float], b: float, sigmoid: bool = True) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.net.weight.copy_(torch.tensor([w]))
            self.net.bias.fill_(b)
        self.sigmoid = sigmoid

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.net(x)
        return {"t": torch.sigmoid(y) if self.sigmoid else y}


class MLP(Deterministic):
    def __init__(self, x_dim: int = 2, sigmoid: bool = True) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        layers = [nn.Linear(x_dim, 8), nn.ReLU(), nn.Linear(8, 1)] + ([nn.Sigmoid()] if sigmoid else [])
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


def _generator(shift: float = 1.0, dim: int = 1):  # type: ignore[no-untyped-def]
    g = Shift(shift) if dim == 1 else Shift2(dim, shift)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[dim], name="p_{prior}")
    return g, (g * prior).marginalize_var("z")


class Shift2(Shift):
    def __init__(self, dim: int, shift: float) -> None:
        Deterministic.__init__(self, var=["x"], cond_var=["z"], name="p")
        self.shift = nn.Parameter(torch.full((dim,), shift))


def _js_normal(m1: float, m2: float) -> float:
    """JS(N(m1, 1) || N(m2, 1)) by quadrature (float64)."""
    x = torch.linspace(-15, 16, 400_001, dtype=torch.float64)
    p = torch.exp(-0.5 * (x - m1) ** 2) / math.sqrt(2 * math.pi)
    q = torch.exp(-0.5 * (x - m2) ** 2) / math.sqrt(2 * math.pi)
    m = 0.5 * (p + q)
    f = 0.5 * p * torch.log(p / m) + 0.5 * q * torch.log(q / m)
    return float(torch.trapezoid(f, x))


def _se(*terms: torch.Tensor) -> float:
    return math.sqrt(sum(float(t.var()) / t.numel() for t in terms))


# ------------------------------------------------------------------------------------------------ closed forms
def test_js_at_the_optimal_discriminator_is_two_js_minus_log_four() -> None:
    _, p = _generator(1.0)
    d = Logistic([-1.0], 0.5)  # d*(x) = p_data / (p_data + p) for N(0,1) vs N(1,1)
    loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, d, inverse_g_loss=False)
    x = torch.randn(N, 1)
    js = _js_normal(0.0, 1.0)
    assert 0.05 < js < 0.15  # sanity of the quadrature: JS(N(0,1)||N(1,1)) is about 0.1
    # reference draws for the tolerance: log d*(x_data) and log(1 - d*(x_gen))
    ref_p, ref_q = -nn.functional.softplus(torch.randn(N) - 0.5), -nn.functional.softplus(-(torch.randn(N) + 1) + 0.5)
    tol = 5 * _se(ref_p, ref_q)
    value = float(loss.eval({"x": x}).detach())
    assert abs(value - (2 * js - math.log(4))) < tol, (value, 2 * js - math.log(4), tol)
    # the discriminator's loss is its negative (binary cross-entropy), through eval(discriminator=True) and loss_test
    assert abs(float(loss.eval({"x": x}, discriminator=True).detach()) - (math.log(4) - 2 * js)) < tol
    assert abs(float(loss.loss_test({"x": x})) - (math.log(4) - 2 * js)) < tol
    # any other discriminator gives a lower value (the optimum is a maximum)
    worse = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, Logistic([-0.3], 0.0), inverse_g_loss=False)
    assert float(worse.eval({"x": x}).detach()) < value - 10 * tol


def test_js_non_saturating_generator_loss() -> None:
    """inverse_g_loss=True: -E_data log(1 - d) - E_gen log d, checked against the closed form of each mean."""
    _, p = _generator(1.0)
    loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, Logistic([-1.0], 0.5))
    torch.manual_seed(3)
    x = torch.randn(N, 1)
    ref_data = nn.functional.softplus(-x[:, 0] + 0.5)  # -log(1 - sigmoid(-x + 1/2))
    torch.manual_seed(4)
    ref_gen = nn.functional.softplus(torch.randn(N) + 1 - 0.5)  # -log sigmoid(-x + 1/2) at x ~ N(1, 1)
    expected = float(ref_data.mean()) + float(ref_gen.mean())
    assert abs(float(loss.eval({"x": x}).detach()) - expected) < 5 * _se(ref_data, ref_gen) * math.sqrt(2)


def test_adversarial_kl_at_the_optimal_discriminator_is_the_kl() -> None:
    """KL(N(0,1) || N(1,1)) = 1/2; with d* the estimate is E_data[-x + 1/2] (standard error 1/sqrt(N))."""
    _, q = _generator(1.0)
    loss = AdversarialKullbackLeibler(EmpiricalDistribution(["x"]), q, Logistic([-1.0], 0.5))
    value = float(loss.eval({"x": torch.randn(N, 1)}).detach())
    assert abs(value - 0.5) < 5 / math.sqrt(N)


def test_wasserstein_with_the_optimal_critic_is_w1() -> None:
    """W1(N(2,1), N(0,1)) = 2, attained by the 1-Lipschitz critic f(x) = x."""
    _, q = _generator(0.0)
    w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), q, Logistic([1.0], 0.0, sigmoid=False))
    value = float(w.eval({"x": torch.randn(N, 1) + 2}).detach())
    assert abs(value - 2.0) < 5 * math.sqrt(2 / N)
    assert abs(float(w.loss_test({"x": torch.randn(N, 1) + 2})) + 2.0) < 5 * math.sqrt(2 / N)


# ------------------------------------------------------------------------------------------------ the two steps
@pytest.mark.parametrize("cls", [AdversarialJensenShannon, AdversarialKullbackLeibler])
def test_discriminator_step_raises_accuracy_and_leaves_the_generator(cls) -> None:  # type: ignore[no-untyped-def]
    g, p = _generator(1.0)
    d = Logistic([1.0], -0.5)  # the worst discriminator: accuracy 1 - Phi(1/2) = 0.31
    loss = cls(EmpiricalDistribution(["x"]), p, d, optimizer_params={"lr": 0.05})
    x_test = {"x": torch.randn(4096, 1)}
    before = loss.discriminator_accuracy(x_test)
    d_before = float(loss.loss_test(x_test))
    assert before < 0.4
    for _ in range(150):
        loss.loss_train({"x": torch.randn(256, 1)})
    after = loss.discriminator_accuracy(x_test)
    assert after > 0.6 > before  # the Bayes accuracy is Phi(1/2) = 0.69
    assert float(loss.loss_test(x_test)) < d_before
    assert float(g.shift.detach()) == 1.0 and g.shift.grad is None  # the generator was neither updated nor given gradients
    assert loss.d_steps == 150
    # the weight approaches the optimum -1 (bias 1/2)
    assert float(d.net.weight.detach()) < -0.5


@pytest.mark.parametrize("cls", [AdversarialJensenShannon, AdversarialKullbackLeibler, AdversarialWassersteinDistance])
def test_generator_side_gives_gradients_to_the_generator_only(cls) -> None:  # type: ignore[no-untyped-def]
    g, p = _generator(1.0)
    d = Logistic([-1.0], 0.5, sigmoid=cls is not AdversarialWassersteinDistance)
    # the generator first (p), as a FactorVAE compares q with its shuffle: only p's samples enter the KL estimate
    loss = cls(p, EmpiricalDistribution(["x"]), d)
    loss.eval({"x": torch.randn(64, 1)}).backward()
    assert g.shift.grad is not None and float(g.shift.grad.abs()) > 0
    assert all(t.grad is None for t in d.parameters())
    assert all(t.requires_grad for t in d.parameters())  # frozen only during the evaluation


def test_bernoulli_discriminator_is_read_through_its_probabilities() -> None:
    class D(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(1, 1)
            with torch.no_grad():
                self.net.weight.fill_(-1.0)
                self.net.bias.fill_(0.5)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"probs": torch.sigmoid(self.net(x))}

    _, p = _generator(1.0)
    x = {"x": torch.randn(256, 1)}
    a = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, D())
    b = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, Logistic([-1.0], 0.5))
    torch.manual_seed(0)
    va = a.loss_test(x)
    torch.manual_seed(0)
    assert torch.allclose(va, b.loss_test(x))
    a.loss_train(x)


# ------------------------------------------------------------------------------------------------ ownership, arithmetic
def test_factorvae_objective_composes_and_keeps_the_discriminator_out() -> None:
    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Linear(4, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}

    class QShuffle(Deterministic):
        def __init__(self, q: Q) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q_{shuffle}")
            self.q = q

        def forward(self, x):  # type: ignore[no-untyped-def]
            z = self.q.sample({"x": x}, return_all=False)["z"]
            return {"z": torch.stack([c[torch.randperm(len(c))] for c in z.T], dim=1)}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 4)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"probs": torch.sigmoid(self.net(z))}

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["z"], name="d")
            self.net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"t": self.net(z)}

    q, p, d = Q(), P(), D()
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    tc = AdversarialKullbackLeibler(q, QShuffle(q), discriminator=d)
    loss = (-p.log_prob().expectation(q) + KullbackLeibler(q, prior)).mean() + 6.4 * tc
    assert str(loss).endswith(r"+ 6.4 mean(D_{KL}^{Adv} \left[q(z|x)||q_{shuffle}(z|x) \right])")  # as Pixyz prints it
    assert d not in loss.distributions and tc.discriminators == [d]
    assert tc in loss.loss_terms()
    x = torch.bernoulli(torch.full((32, 4), 0.5))
    value, terms = loss.eval({"x": x}, return_terms=True)
    assert value.shape == () and any("D_{KL}^{Adv}" in k for k in terms)
    value.backward()
    assert q.net.weight.grad is not None and p.net.weight.grad is not None
    assert all(t.grad is None for t in d.parameters())


def test_aliases_and_latex() -> None:
    _, p = _generator()
    data = EmpiricalDistribution(["x"])
    assert AdversarialJSDivergence is AdversarialJensenShannon
    assert str(AdversarialJensenShannon(data, p, Logistic([1.], 0.))) == \
        r"mean(D_{JS}^{Adv} \left[p_{data}(x)||p(x) \right])"  # Pixyz's text: the term is a batch mean
    assert str(AdversarialKullbackLeibler(p, data, Logistic([1.], 0.))) == \
        r"mean(D_{KL}^{Adv} \left[p(x)||p_{data}(x) \right])"
    assert str(AdversarialWassersteinDistance(data, p, Logistic([1.], 0.))) == \
        r"mean(W^{Adv} \left(p_{data}(x), p(x) \right))"
    assert AdversarialJensenShannon(data, p, Logistic([1.], 0.)).train is not None  # Pixyz's train/test names


# ------------------------------------------------------------------------------------------------ Wasserstein
def test_weight_clipping_keeps_the_critic_within_the_clip_value() -> None:
    _, p = _generator(0.0, dim=2)
    torch.manual_seed(0)
    critic = MLP(2, sigmoid=False)
    assert max(float(t.detach().abs().max()) for t in critic.parameters()) > 0.05
    w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, critic, clip_value=0.05,
                                       optimizer_params={"lr": 0.1})
    for _ in range(5):
        w.loss_train({"x": torch.randn(64, 2) + 3})
        assert all(bool((t.abs() <= 0.05).all()) for t in critic.parameters())
    # default: Pixyz's 0.01; no clipping with clip_value=None or (by default) with a gradient penalty
    assert AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, MLP(2, False)).clip_value == 0.01
    assert AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, MLP(2, False),
                                          gradient_penalty=10.).clip_value is None


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic() -> None:
    _, p = _generator(0.0, dim=2)
    data = EmpiricalDistribution(["x"])
    x = {"x": torch.randn(256, 2) + 3}
    unit = AdversarialWassersteinDistance(data, p, Logistic([0.6, 0.8], 0.3, sigmoid=False), gradient_penalty=10.)
    assert float(unit.penalty(x)) < 1e-10
    double = AdversarialWassersteinDistance(data, p, Logistic([1.2, 1.6], 0.3, sigmoid=False), gradient_penalty=10.)
    assert abs(float(double.penalty(x)) - 1.0) < 1e-5  # (||w|| - 1)^2 = 1
    # the critic's loss includes lambda * penalty: -(mean d(x_data) - mean d(x_gen)) + 10 * 1
    torch.manual_seed(1)
    d_loss = float(double.loss_test(x))
    torch.manual_seed(1)
    gen = p.sample(batch_n=256, return_all=False)["x"].detach()
    expected = -float((x["x"] @ torch.tensor([1.2, 1.6])).mean() - (gen @ torch.tensor([1.2, 1.6])).mean()) + 10.0
    assert abs(d_loss - expected) < 1e-3


def test_gradient_penalty_drives_the_critic_norm_to_one() -> None:
    """With both sides from the same distribution, the critic's loss is (about) the penalty alone."""
    _, p = _generator(0.0, dim=2)
    critic = Logistic([1.8, 2.4], 0.0, sigmoid=False)  # norm 3
    w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, critic, gradient_penalty=10.,
                                       optimizer_params={"lr": 0.02})
    for _ in range(200):
        w.loss_train({"x": torch.randn(128, 2)})
    assert abs(float(critic.net.weight.detach().norm()) - 1.0) < 0.1


# ------------------------------------------------------------------------------------------------ checkpoints
def _trained_js(seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    _, p = _generator(1.0, dim=2)
    return AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, MLP(2), optimizer_params={"lr": 0.01})


def test_state_dict_round_trips_the_discriminator_and_its_optimizer() -> None:
    a = _trained_js(0)
    for _ in range(3):
        a.loss_train({"x": torch.randn(32, 2)})
    buf = io.BytesIO()
    torch.save(a.term_state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"discriminator", "optimizer", "d_steps"} and len(state["optimizer"]["state"]) == 4
    b = _trained_js(1)  # another initialization, same architecture
    b.load_term_state_dict(state)
    assert b.d_steps == 3
    for ta, tb in zip(a.discriminator.state_dict().values(), b.discriminator.state_dict().values()):
        assert torch.equal(ta, tb)
    sa, sb = a.d_optimizer.state_dict()["state"], b.d_optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    # the next step is the same for both (same data, same draws)
    x = {"x": torch.randn(32, 2)}
    torch.manual_seed(5)
    a.loss_train(x)
    torch.manual_seed(5)
    b.loss_train(x)
    for ta, tb in zip(a.discriminator.parameters(), b.discriminator.parameters()):
        assert torch.equal(ta, tb)


def test_state_dict_errors_name_the_problem() -> None:
    a = _trained_js(0)
    with pytest.raises(ValueError, match="keys"):
        a.load_term_state_dict({"discriminator": {}})
    _, p = _generator(1.0, dim=3)
    other = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, MLP(3))
    with pytest.raises(ValueError, match=r"'net.0.weight' has shape \(8, 2\).*\(8, 3\)"):
        a.load_term_state_dict(other.term_state_dict())


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_clear_errors() -> None:
    g, p = _generator(1.0)
    data = EmpiricalDistribution(["x"])
    d = Logistic([1.], 0.)
    with pytest.raises(TypeError, match="a discriminator is required"):
        AdversarialJensenShannon(data, p, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a pyro_dgm Distribution.*Deterministic"):
        AdversarialJensenShannon(data, p, nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same variables"):
        AdversarialJensenShannon(EmpiricalDistribution(["y"]), p, d)
    with pytest.raises(ValueError, match="neither .* takes an input"):
        AdversarialJensenShannon(Normal(loc=0., scale=1., var=["x"]), p, d)

    class DY(Logistic):
        def __init__(self) -> None:
            Deterministic.__init__(self, var=["t"], cond_var=["y"], name="d")
            self.net = nn.Linear(1, 1)

        def forward(self, y):  # type: ignore[no-untyped-def, override]
            return {"t": torch.sigmoid(self.net(y))}

    with pytest.raises(ValueError, match=r"conditioned on \['y'\].*cond_var=\['x'\]"):
        AdversarialJensenShannon(data, p, DY())

    class DX(Logistic):
        def __init__(self) -> None:
            Deterministic.__init__(self, var=["x"], cond_var=["z"], name="d")
            self.net = nn.Linear(1, 1)

        def forward(self, z):  # type: ignore[no-untyped-def, override]
            return {"x": self.net(z)}

    with pytest.raises(ValueError, match="generates 'x'"):
        AdversarialJensenShannon(data, p, DX())
    with pytest.raises(ValueError, match="one of the compared"):
        AdversarialJensenShannon(data, p, p)

    class DShared(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.g = g  # the generator's network inside the discriminator

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": torch.sigmoid(x * self.g.shift)}

    shared = AdversarialJensenShannon(data, p, DShared())  # allowed, as in Pixyz: the shared parameter is not frozen
    shared.eval({"x": torch.randn(4, 1)}).backward()
    assert g.shift.grad is not None
    with pytest.raises(ValueError, match="no parameters"):
        AdversarialJensenShannon(data, p, Normal(loc="x", scale=1., var=["t"], cond_var=["x"]))
    with pytest.raises(TypeError, match="an instance"):
        AdversarialJensenShannon(data, p, d, optimizer=torch.optim.Adam(d.parameters()))
    with pytest.raises(TypeError, match="cannot build the discriminator's optimizer"):
        AdversarialJensenShannon(data, p, d, optimizer_params={"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="clip_value must be a number >= 0"):
        AdversarialWassersteinDistance(data, p, d, clip_value=-1.)
    loss = AdversarialJensenShannon(data, p, d)
    with pytest.raises(ValueError, match="missing input variable 'x'"):
        loss.loss_train({"y": torch.zeros(3, 1)})
    linear = AdversarialJensenShannon(data, p, Logistic([3.], 5., sigmoid=False))
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\].*sigmoid"):
        linear.loss_train({"x": torch.randn(8, 1)})
    assert all(t.requires_grad for t in linear.discriminator.parameters())
    with pytest.raises(ValueError, match="probabilities"):
        linear.eval({"x": torch.randn(8, 1)})
    assert all(t.requires_grad for t in linear.discriminator.parameters())  # restored after the failed evaluation
