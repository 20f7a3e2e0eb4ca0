"""The Loss API under Pixyz programs: every loss class of pixyz 0.3.3, run under Pixyz and under pyro_dgm (import
renamed) from the same seed, compared in value, shape and printed formula.

Each ``prog_*`` function is a Pixyz program (see ``pixyz_harness``); the data are drawn inside the program after the
seed, and networks are initialized in the same order under both libraries, so the numbers agree to float32 rounding
(rtol 1e-5). Where Pixyz computes a wrong value (MMD), the test shows both values and the reason.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


# ------------------------------------------------------------------------------------------------ shared networks
def _encoder(pd: Any, x_dim: int = 6, z_dim: int = 3) -> Any:
    """q(z|x): a Normal whose loc and scale come from one linear layer (built from the program's own ``pixyz``)."""
    from torch import nn
    from torch.nn import functional as F

    class Encoder(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(x_dim, 2 * z_dim)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[..., :z_dim], "scale": F.softplus(h[..., z_dim:]) + 0.1}

    return Encoder()


def _decoder(pd: Any, x_dim: int = 6, z_dim: int = 3) -> Any:
    """p(x|z): a Bernoulli with one linear layer."""
    from torch import nn

    class Decoder(pd.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(z_dim, x_dim)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z))}

    return Decoder()


def _prior(pd: Any, z_dim: int = 3) -> Any:
    return pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[z_dim],
                     name="p_{prior}")


def _binary(n: int = 8, d: int = 6) -> torch.Tensor:
    return torch.rand(n, d).round()


# ------------------------------------------------------------------------------------------------ density terms
def prog_logprob_prob() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import LogProb, Prob

    p = pd.Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.), var=["x"], features_shape=[4])
    x = torch.randn(5, 4)
    return {"logp": LogProb(p).eval({"x": x}), "p": Prob(p).eval({"x": x}),
            "elementwise": LogProb(p, sum_features=False).eval({"x": x}),
            "method": p.log_prob().eval({"x": x}), "text": [str(LogProb(p)), str(Prob(p)), str(-p.log_prob())],
            "input_var": LogProb(p).input_var}


def prog_expectation_sample_shape() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import Expectation, LogProb

    q, p = _encoder(pd), _decoder(pd)
    x = _binary()
    e1 = Expectation(q, LogProb(p))
    e5 = p.log_prob().expectation(q, sample_shape=(5,))
    v1, samples = e1.eval({"x": x}, return_dict=True)
    return {"e1": v1, "z": samples["z"], "e5": e5.eval({"x": x}), "text": str(e5), "input_var": e5.input_var}


def prog_reinforce() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import REINFORCE, LogProb

    class Q(pd.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["c"], name="q")
            self.fc = torch.nn.Linear(2, 4)

        def forward(self, c: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(c))}

    q = Q()
    p = pd.Bernoulli(probs=torch.tensor(0.3), var=["x"], features_shape=[4])
    surrogate = REINFORCE(q, LogProb(p), sample_shape=[3])
    value = surrogate.eval({"c": torch.randn(5, 2)}).sum()
    value.backward()
    return {"value": value.detach(), "grad": q.fc.weight.grad, "text": str(surrogate),
            "input_var": surrogate.input_var}


# ------------------------------------------------------------------------------------------------ divergences
def prog_kl_analytic_and_mc() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler

    q, prior = _encoder(pd), _prior(pd)
    x = torch.randn(8, 6)
    kl = KullbackLeibler(q, prior)
    mc = KullbackLeibler(q, prior, analytical=False, sample_shape=[3])
    return {"kl": kl.eval({"x": x}), "mc": mc.eval({"x": x}), "text": [str(kl), str(mc)],
            "input_var": [kl.input_var, mc.input_var]}


def prog_entropy_cross_entropy() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import CrossEntropy, Entropy

    q, prior = _encoder(pd), _prior(pd)
    x = torch.randn(8, 6)
    out = {}
    for name, loss in {"h": Entropy(q), "h_mc": Entropy(q, analytical=False, sample_shape=[2]),
                       "ce": CrossEntropy(q, prior), "ce_exact": CrossEntropy(q, prior, analytical=True)}.items():
        out[name] = loss.eval({"x": x})
        out[name + "_text"] = str(loss)
    return out


def prog_cross_entropy_reconstruction() -> Any:
    """MMD-VAE's notebook: ``CrossEntropy(q, p)`` with q(z|x) and p(x|z), i.e. -E_q[log p(x|z)]."""
    import pixyz.distributions as pd
    from pixyz.losses import CrossEntropy

    q, p = _encoder(pd), _decoder(pd)
    reconst = CrossEntropy(q, p)
    return {"value": reconst.eval({"x": _binary()}), "text": str(reconst), "input_var": reconst.input_var}


# ------------------------------------------------------------------------------------------------ bounds
def prog_elbo() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import ELBO

    q, p, prior = _encoder(pd), _decoder(pd), _prior(pd)
    elbo = ELBO(p * prior, q)
    elbo3 = ELBO(p * prior, q, sample_shape=[3])
    x = _binary()
    return {"elbo": elbo.eval({"x": x}), "elbo3": elbo3.eval({"x": x}), "text": str(elbo),
            "input_var": elbo.input_var}


def prog_m2_unlabelled_elbo() -> Any:
    """M2's unlabelled bound: q(z,y|x) draws y, which p(x|z,y)p(z) only conditions on (p(y) is left out)."""
    from torch import nn

    import pixyz.distributions as pd
    from pixyz.losses import ELBO

    class P(pd.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.fc = nn.Linear(3 + 2, 6)

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(torch.cat([z, y], -1)))}

    class Qz(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.fc = nn.Linear(6 + 2, 6)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
            h = self.fc(torch.cat([x, y], -1))
            return {"loc": h[:, :3], "scale": nn.functional.softplus(h[:, 3:]) + 0.1}

    class Qy(pd.RelaxedCategorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="q")
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"probs": torch.softmax(self.fc(x), -1)}

    p, qz, qy, prior = P(), Qz(), Qy(), _prior(pd)
    p_joint = p * prior
    q_u = qz * qy
    elbo_u = ELBO(p_joint, q_u)
    x = _binary()
    y = torch.eye(2)[torch.randint(0, 2, (8,))]
    elbo_l = ELBO(p_joint, qz)
    return {"u_text": str(elbo_u), "u_input": elbo_u.input_var, "l": elbo_l.eval({"x": x, "y": y}),
            "l_text": str(elbo_l), "l_input": sorted(elbo_l.input_var)}


# ------------------------------------------------------------------------------------------------ sample distances
def prog_wasserstein() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import WassersteinDistance

    q, prior = _encoder(pd), _prior(pd)
    w = WassersteinDistance(q, prior)
    return {"value": w.eval({"x": torch.randn(8, 6)}), "text": str(w), "input_var": w.input_var}


def prog_mmd_text() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import MMD

    q, prior = _encoder(pd), _prior(pd)
    mmd = MMD(q, prior, kernel="gaussian", sigma_sqr=2.)
    return {"text": str(mmd), "input_var": mmd.input_var, "shape": mmd.eval({"x": torch.randn(8, 6)}).shape}


def prog_mmd_samples() -> Any:
    """The samples MMD compares (drawn as MMD draws them) and its value."""
    import pixyz.distributions as pd
    from pixyz.losses import MMD

    q, prior = _encoder(pd), _prior(pd)
    x = torch.randn(8, 6)
    mmd = MMD(q, prior, kernel="gaussian", sigma_sqr=2.)
    state = torch.get_rng_state()
    value = mmd.eval({"x": x})
    torch.set_rng_state(state)
    zq = q.sample({"x": x})["z"]
    zp = prior.sample(batch_n=8)["z"]
    return {"value": value, "zq": zq, "zp": zp}


# ------------------------------------------------------------------------------------------------ special terms
def prog_parameter_value_constant() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import ConstantVar, KullbackLeibler, Parameter, ValueLoss

    q, prior = _encoder(pd), _prior(pd)
    x = torch.randn(8, 6)
    beta = Parameter("beta")
    loss = (beta * KullbackLeibler(q, prior)).mean()
    fixed = loss.constant_var({"beta": 0.5})
    two = ValueLoss(2)
    return {"beta": loss.eval({"x": x, "beta": 3.}), "fixed": fixed.eval({"x": x}), "two": two.eval(),
            "param": beta.eval({"beta": 4}), "texts": [str(loss), str(fixed), str(two), str(beta)],
            "inputs": [sorted(loss.input_var), sorted(fixed.input_var), two.input_var],
            "cv": ConstantVar(Parameter("x"), {"x": 1}).eval()}


def prog_operators() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import LogProb, MaxLoss, MinLoss, Parameter, ValueLoss

    p = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[3])
    q = pd.Normal(loc=torch.tensor(1.), scale=torch.tensor(2.), var=["x"], features_shape=[3], name="q")
    a, b = LogProb(p), LogProb(q)
    x = {"x": torch.randn(4, 3)}
    losses = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b, "neg": -a, "abs": a.abs(),
              "min": MinLoss(a, b), "max": MaxLoss(a, b), "mean": (a - b).mean(), "sum": (a + b).sum(),
              "radd": 1 + a, "rsub": 1 - a, "rmul": 2 * a, "rdiv": 2 / a, "detach": a.detach(),
              "scalar": ValueLoss(3) + 2, "param": Parameter("c") * a}
    out = {k + "_value": v.eval({**x, "c": 2.}) for k, v in losses.items()}
    out.update({k + "_input": sorted(v.input_var) for k, v in losses.items()})
    out["max_text"], out["min_text"] = str(losses["max"]), str(losses["min"])
    out["sum_text"], out["mean_text"] = str(losses["sum"]), str(losses["mean"])
    out["abs_text"], out["detach_text"] = str(losses["abs"]), str(losses["detach"])
    return out


def prog_detach_has_no_grad() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import LogProb

    p = pd.Normal(loc="y", scale=torch.tensor(1.), var=["x"], cond_var=["y"])
    y = torch.randn(4, 1, requires_grad=True)
    x = torch.randn(4, 1)
    return {"detached": LogProb(p).detach().eval({"x": x, "y": y}).requires_grad,
            "kept": LogProb(p).eval({"x": x, "y": y}).requires_grad}


def prog_return_dict() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler

    q, p, prior = _encoder(pd), _decoder(pd), _prior(pd)
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    x = _binary()
    value, all_ = loss.eval({"x": x}, return_dict=True)
    _, drawn = loss.eval({"x": x.clone()}, return_dict=True, return_all=False)
    return {"value": value, "keys": sorted(all_), "drawn_keys": sorted(drawn), "z": all_["z"]}


def prog_iterative_loss() -> Any:
    """A VRNN-like step loss over time: series_var sliced at each step, update_value carries the state."""
    import pixyz.distributions as pd
    from pixyz.losses import IterativeLoss, KullbackLeibler

    class Q(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x", "h_prev"], name="q")
            self.fc = torch.nn.Linear(3 + 2, 4)

        def forward(self, x: torch.Tensor, h_prev: torch.Tensor) -> dict:
            o = self.fc(torch.cat([x, h_prev], -1))
            return {"loc": o[:, :2], "scale": torch.nn.functional.softplus(o[:, 2:]) + 0.1}

    class P(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["h"], name="p")
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, h: torch.Tensor) -> dict:
            return {"loc": self.fc(h), "scale": torch.ones(h.shape[0], 3)}

    prior = pd.Normal(loc="h_prev", scale=torch.tensor(1.), var=["h"], cond_var=["h_prev"], name="p_{prior}")
    q, p = Q(), P()
    step = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    loss = IterativeLoss(step, max_iter=4, series_var=["x"], update_value={"h": "h_prev"})
    loss_t = IterativeLoss(step, series_var=["x"], update_value={"h": "h_prev"})
    xs, h0 = torch.randn(4, 5, 3), torch.zeros(5, 2)
    value = loss.eval({"x": xs, "h_prev": h0})
    masked = loss.eval({"x": xs, "h_prev": h0}, mask=torch.tensor([1., 1., 0., 1.]))
    return {"value": value, "masked": masked, "no_max": loss_t.eval({"x": xs, "h_prev": h0}),
            "text": str(loss), "text_t": str(loss_t), "input_var": sorted(loss.input_var)}


def prog_iterative_timestep_and_slice_step() -> Any:
    """timestep_var holds t (not an input); slice_step draws each step's inputs (the step loss becomes E_slice[...])."""
    import pixyz.distributions as pd
    from pixyz.losses import IterativeLoss, LogProb, Parameter

    p = pd.Normal(loc="m", scale=torch.tensor(1.), var=["x"], cond_var=["m"])
    loss = IterativeLoss((LogProb(p) * Parameter("t")).mean(), max_iter=3, series_var=["x"],
                         timestep_var=["t"])
    slicer = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="s")
    sliced = IterativeLoss(LogProb(p).mean(), max_iter=2, slice_step=slicer)
    data = {"x": torch.randn(3, 4, 2), "m": torch.randn(4, 2)}
    return {"value": loss.eval(data), "input_var": sorted(loss.input_var), "text": str(loss),
            "sliced": sliced.eval({"m": torch.randn(4, 2)}), "sliced_input": sorted(sliced.input_var),
            "sliced_text": str(sliced)}


# ------------------------------------------------------------------------------------------------ adversarial terms
def _adversarial_setup(pd: Any, sigmoid: bool = True) -> Any:
    from torch import nn

    class Generator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.fc(z)}

    class Discriminator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            t = self.fc(x)
            return {"t": torch.sigmoid(t) if sigmoid else t}

    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2],
                      name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    return p, pd.EmpiricalDistribution(["x"]), Discriminator()


def prog_adversarial_js() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import AdversarialJensenShannon

    p, p_data, d = _adversarial_setup(pd)
    loss = AdversarialJensenShannon(p, p_data, discriminator=d, optimizer_params={"lr": 0.1})
    x = torch.randn(8, 3)
    g0 = loss.eval({"x": x})
    d_losses = [loss.loss_train({"x": x.clone()}) for _ in range(3)]
    return {"g0": g0, "d": d_losses, "g1": loss.eval({"x": x.clone()}), "test": loss.loss_test({"x": x.clone()}),
            "text": str(loss), "weights": list(d.parameters()), "mean_text": str(loss.mean())}


def prog_adversarial_kl() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import AdversarialKullbackLeibler

    p, p_data, d = _adversarial_setup(pd)
    loss = AdversarialKullbackLeibler(p, p_data, discriminator=d, optimizer_params={"lr": 0.1})
    x = torch.randn(8, 3)
    g0 = loss.eval({"x": x})
    d_losses = [loss.loss_train({"x": x.clone()}) for _ in range(2)]
    return {"g0": g0, "d": d_losses, "g1": loss.eval({"x": x.clone()}), "text": str(loss),
            "weights": list(d.parameters())}


def prog_adversarial_wasserstein() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import AdversarialWassersteinDistance

    p, p_data, d = _adversarial_setup(pd, sigmoid=False)
    loss = AdversarialWassersteinDistance(p, p_data, discriminator=d, optimizer_params={"lr": 0.1})
    x = torch.randn(8, 3)
    g0 = loss.eval({"x": x})
    d_losses = [loss.loss_train({"x": x.clone()}) for _ in range(2)]
    return {"g0": g0, "d": d_losses, "g1": loss.eval({"x": x.clone()}), "text": str(loss),
            "weights": list(d.parameters())}


# ------------------------------------------------------------------------------------------------ nn.Module
def prog_loss_is_a_module() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler

    q, p, prior = _encoder(pd), _decoder(pd), _prior(pd)
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    moved = loss.to("cpu")
    loss.train(False)
    mode_off = [m.training for m in (q, p)]
    loss.train()
    return {"module": isinstance(loss, torch.nn.Module), "same": moved is loss,
            "n_params": len(list(loss.parameters())), "param_ids": sorted(id(t) for t in loss.parameters()) ==
            sorted(id(t) for t in list(q.parameters()) + list(p.parameters())),
            "state_dict_tensors": sorted(tuple(v.shape) for v in loss.state_dict().values()),
            "modes": mode_off, "mode_back": [m.training for m in (q, p)]}


PROGRAMS = [prog_logprob_prob, prog_expectation_sample_shape, prog_reinforce, prog_kl_analytic_and_mc,
            prog_entropy_cross_entropy, prog_cross_entropy_reconstruction, prog_elbo, prog_m2_unlabelled_elbo,
            prog_wasserstein, prog_mmd_text,
            prog_parameter_value_constant, prog_operators, prog_detach_has_no_grad, prog_return_dict,
            prog_iterative_loss, prog_iterative_timestep_and_slice_step, prog_adversarial_js, prog_adversarial_kl,
            prog_adversarial_wasserstein, prog_loss_is_a_module]


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.__name__[5:] for p in PROGRAMS])
def test_same_as_pixyz(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


# ------------------------------------------------------------------------------------------------ where Pixyz is wrong
def _gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigma_sqr: float = 2.) -> torch.Tensor:
    return torch.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / sigma_sqr)


def test_mmd_is_the_unbiased_estimator_pixyz_divides_by_the_feature_dim() -> None:
    """Pixyz 0.3.3's MMD divides the kernel sums by ``d(d-1)`` and ``d^2`` with ``d`` the *feature* dimension (3
    here) and keeps the diagonal ``k(x_i, x_i) = 1``: not an estimator of MMD^2 (it grows with the batch size, and
    is not zero for identical distributions). pyro_dgm computes the unbiased estimator of Gretton et al. (2012):
    off-diagonal means over the ``n`` samples. Both are checked against those formulas on the samples each draws
    (the same samples: same seed, same draw order)."""
    ref, ours = run_both(prog_mmd_samples)
    assert_same({k: ref[k] for k in ("zq", "zp")}, {k: ours[k] for k in ("zq", "zp")})
    x, y = ref["zq"], ref["zp"]
    n, d = x.shape
    kxx, kyy, kxy = _gaussian_kernel(x, x), _gaussian_kernel(y, y), _gaussian_kernel(x, y)
    pixyz_formula = kxx.sum() / (d * (d - 1)) + kyy.sum() / (d * (d - 1)) - 2 * kxy.sum() / (d * d)
    unbiased = ((kxx.sum() - kxx.diagonal().sum()) + (kyy.sum() - kyy.diagonal().sum())) / (n * (n - 1)) \
        - 2 * kxy.mean()
    torch.testing.assert_close(ref["value"].detach(), pixyz_formula)
    torch.testing.assert_close(ours["value"].detach(), unbiased)
    assert abs(float(ref["value"].detach()) - float(ours["value"].detach())) > 0.1  # really different numbers


def prog_sample_based_distances_have_a_gradient() -> Any:
    import pixyz.distributions as pd
    from pixyz.losses import MMD, WassersteinDistance

    q, prior = _encoder(pd), _prior(pd)
    x = torch.randn(5, 6)
    return {name: term.eval({"x": x.clone()}).requires_grad
            for name, term in (("wasserstein", WassersteinDistance(q, prior)), ("mmd", MMD(q, prior)))}


@pytest.mark.parametrize("name", ["WassersteinDistance", "MMD"])
def test_sample_based_distances_train_the_encoder_pixyz_draws_without_gradient(name: str) -> None:
    """Pixyz draws the samples of ``WassersteinDistance`` and ``MMD`` with ``sample()``'s default
    ``reparam=False``: the term's value has no gradient, so the regularizer of a WAE or an InfoVAE (MMD-VAE) does
    not train the encoder. Ours draws them reparameterized: the gradient is the pathwise one, which finite
    differences of the term (its noise fixed by the seed) confirm, in float64."""
    ref, ours = run_both(prog_sample_based_distances_have_a_gradient)
    assert ref == {"wasserstein": False, "mmd": False} and ours == {"wasserstein": True, "mmd": True}
    import pyro_dgm.distributions as pd
    from pyro_dgm import losses

    q, prior = _encoder(pd).double(), _prior(pd).double()
    term = getattr(losses, name)(q, prior)
    x = torch.randn(5, 6, dtype=torch.float64)

    def value() -> torch.Tensor:
        torch.manual_seed(3)
        return term.eval({"x": x}).sum()

    bias = q.fc.bias
    grad, = torch.autograd.grad(value(), bias)
    h = 1e-6
    numeric = torch.zeros_like(bias)
    with torch.no_grad():
        for i in range(bias.numel()):
            bias[i] += h
            up = value()
            bias[i] -= 2 * h
            down = value()
            bias[i] += h
            numeric[i] = (up - down) / (2 * h)
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


def test_mmd_of_identical_samples_is_zero_here_not_under_pixyz() -> None:
    """Two equal point masses (every sample the same point, every kernel value 1): MMD^2 is 0, and the unbiased
    estimate is 1 + 1 - 2 = 0; Pixyz's normalization gives 2 n^2 / (d(d-1)) - 2 n^2 / d^2, not 0."""
    def program() -> Any:
        import pixyz.distributions as pd
        from pixyz.losses import MMD

        p = pd.Normal(loc="x", scale=torch.tensor(1e-30), var=["z"], cond_var=["x"])
        q = pd.Normal(loc="x", scale=torch.tensor(1e-30), var=["z"], cond_var=["x"], name="q")
        return MMD(p, q).eval({"x": torch.zeros(4, 3)})

    ref, ours = run_both(program)
    n, d = 4, 3
    assert float(ref) == pytest.approx(2 * n * n / (d * (d - 1)) - 2 * n * n / (d * d))
    assert float(ours) == pytest.approx(0.0, abs=1e-6)


def test_mmd_of_a_batch_of_one_runs_as_under_pixyz() -> None:
    """Pixyz evaluates MMD on a batch of one (its README-style examples do); the unbiased estimate needs two
    samples, so pyro_dgm returns the biased one there, k(x,x) + k(y,y) - 2 k(x,y), instead of refusing."""
    def program() -> Any:
        import pixyz.distributions as pd
        from pixyz.losses import MMD

        q, prior = _encoder(pd), _prior(pd)
        x = torch.randn(1, 6)
        state = torch.get_rng_state()
        value = MMD(q, prior, kernel="gaussian").eval({"x": x})
        torch.set_rng_state(state)
        return {"value": value, "zq": q.sample({"x": x})["z"], "zp": prior.sample(batch_n=1)["z"]}

    ref, ours = run_both(program)
    assert_same({k: ref[k] for k in ("zq", "zp")}, {k: ours[k] for k in ("zq", "zp")})
    kxy = _gaussian_kernel(ours["zq"], ours["zp"])[0, 0]
    torch.testing.assert_close(ours["value"].detach(), 2 - 2 * kxy)
    d = ours["zq"].shape[1]  # Pixyz: (1 + 1) / (d (d - 1)) - 2 k / d^2
    torch.testing.assert_close(ref["value"].detach(), 2 / (d * (d - 1)) - 2 * kxy / d ** 2)


# ------------------------------------------------------------------------------------------------ user-defined losses
def prog_user_defined_loss() -> Any:
    """A Loss subclass written for Pixyz: sympy ``_symbol``, ``forward`` returning ``(value, dict)``, combined with
    built-in terms, called directly (``loss(x_dict)``) and trained in a Model."""
    import sympy
    from torch import nn, optim

    import pixyz.distributions as pd
    from pixyz.losses import LogProb
    from pixyz.losses.losses import Loss
    from pixyz.models import Model

    class AbsLogProb(Loss):
        def __init__(self, p: Any) -> None:
            super().__init__(p.var + p.cond_var)
            self.p = p

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("|\\log {}|".format(self.p.prob_text))

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            return self.p.get_log_prob(x_dict).abs(), {}

    class P(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.fc(y), "scale": torch.ones(y.shape[0], 3)}

    p = P()
    custom = AbsLogProb(p)
    loss = (custom - 0.5 * LogProb(p)).mean()
    data = {"x": torch.randn(6, 3), "y": torch.randn(6, 2)}
    direct, extra = custom(data)
    model = Model(loss, distributions=[p], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
    losses = [model.train({k: v.clone() for k, v in data.items()}) for _ in range(3)]
    return {"text": str(loss), "custom_text": custom.loss_text, "direct": direct, "extra": extra,
            "input_var": sorted(loss.input_var), "losses": losses, "module": isinstance(custom, nn.Module),
            "children": [type(m).__name__ for m in custom.children()]}


def test_user_defined_loss() -> None:
    ref, ours = run_both(prog_user_defined_loss)
    assert_same(ref, ours)


def prog_adversarial_under_an_operator() -> Any:
    """Pixyz's unary operators pass loss_train/loss_test on to their operand (adversarial_term.mean())."""
    import pixyz.distributions as pd
    from pixyz.losses import AdversarialJensenShannon

    p, p_data, d = _adversarial_setup(pd)
    loss = AdversarialJensenShannon(p_data, p, discriminator=d, optimizer_params={"lr": 0.1}).mean()
    x = torch.randn(8, 3)
    return {"train": [loss.loss_train({"x": x.clone()}).detach() for _ in range(2)],
            "test": loss.loss_test({"x": x.clone()}), "g": loss.eval({"x": x.clone()}), "text": str(loss)}


def test_adversarial_under_an_operator() -> None:
    ref, ours = run_both(prog_adversarial_under_an_operator)
    assert_same(ref, ours)


def test_loss_call_forms() -> None:
    """``loss(x_dict)`` is nn.Module's call of forward, giving Pixyz's ``(value, samples)``; ``loss(model, guide)``
    stays Pyro's ELBO call (an nn.Module whose value is the loss)."""
    import pyro

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
    loss = LogProb(p).mean()
    x = torch.randn(4, 2)
    value, samples = loss({"x": x})
    expected = torch.distributions.Normal(0., 1.).log_prob(x).sum(-1).mean()
    torch.testing.assert_close(value, expected)
    assert samples == {}
    module = loss(lambda **kw: None, lambda **kw: None)
    assert isinstance(module, pyro.infer.elbo.ELBOModule)
    torch.testing.assert_close(module(x=x), expected)


def prog_kl_between_differently_named_variables() -> Any:
    """Pixyz's analytic KL compares the two distributions whatever their variables are called."""
    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler

    q = _encoder(pd)
    w = pd.Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.), var=["w"], features_shape=[3], name="r")
    kl = KullbackLeibler(q, w)
    return {"value": kl.eval({"x": torch.randn(4, 6)}), "text": str(kl), "input_var": kl.input_var}


def test_kl_between_differently_named_variables() -> None:
    ref, ours = run_both(prog_kl_between_differently_named_variables)
    assert_same(ref, ours)


def _outcome(build: Any, data: dict) -> Any:
    """What a program sees: the formula and value, or when it raised (building or evaluating) and the type."""
    try:
        loss = build()
    except Exception as e:  # noqa: BLE001 (the kind of failure is compared)
        return ("building raised", type(e))
    try:
        return str(loss), loss.eval(dict(data))
    except Exception as e:  # noqa: BLE001
        return ("evaluating raised", type(e))


def prog_divergences_between_other_variables() -> Any:
    """Terms between distributions over other variables. Pixyz builds each; it computes q(z|x) against p(x|z) (two
    single distributions compared as distributions of one value; the Monte Carlo form E_q[log q - log p]), and
    raises only when a product's analytic KL or entropy, or a deterministic distribution's entropy, is evaluated
    (ValueError) or a deterministic factor is scored (NotImplementedError). pyro_dgm refused the KLs when they were
    built, and raised a NotImplementedError (not also a ValueError) for the entropies."""
    import torch
    from torch import nn
    import pixyz.distributions as pd
    import pixyz.losses as L

    class H(pd.Deterministic):
        def __init__(self):
            super().__init__(var=["h"], cond_var=["x"], name="f")
            self.net = nn.Linear(1, 2)

        def forward(self, x):
            return {"h": torch.tanh(self.net(x))}

    q = pd.Normal(loc="x", scale=torch.tensor(1.5), var=["z"], cond_var=["x"], name="q")
    p = pd.Normal(loc="z", scale=torch.tensor(0.5), var=["x"], cond_var=["z"], name="p")
    q_h = pd.Normal(loc="h", scale=torch.tensor(1.), var=["z"], cond_var=["h"], name="q") * H()
    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    data = {"x": torch.randn(3, 1), "z": torch.randn(3, 1)}
    return {
        "KL(q(z|x), p(x|z))": _outcome(lambda: L.KullbackLeibler(q, p), data),
        "KL(q(z|x), p(x|z)) by Monte Carlo": _outcome(
            lambda: L.KullbackLeibler(q, p, analytical=False, sample_shape=[4]), data),
        "analytic cross-entropy": _outcome(lambda: L.CrossEntropy(q, p, analytical=True), data),
        "KL(q(z,h|x), p(z))": _outcome(lambda: L.KullbackLeibler(q_h, prior), data),
        "KL(q(z,h|x), p(z)) by Monte Carlo": _outcome(lambda: L.KullbackLeibler(q_h, prior, analytical=False), data),
        "KL(p(z), q(z,h|x))": _outcome(lambda: L.KullbackLeibler(prior, q_h), data),
        "entropy of q(z,h|x)": _outcome(lambda: L.Entropy(q_h), data),
        "entropy of f(h|x)": _outcome(lambda: L.Entropy(H()), data),
        "cross-entropy of q(z,h|x) and p(z)": _outcome(lambda: L.CrossEntropy(q_h, prior), data),
        "data": data,
    }


def test_divergences_between_other_variables_as_pixyz() -> None:
    with pytest.warns(UserWarning, match="over different variables"):  # here, q(z|x) against p(x|z) also warns
        ref, ours = run_both(prog_divergences_between_other_variables)
    for key, outcome in ref.items():
        if isinstance(outcome, tuple) and outcome[0].endswith("raised"):  # the same step raises Pixyz's type
            assert ours[key][0] == outcome[0] and issubclass(ours[key][1], outcome[1]), (key, outcome, ours[key])
        else:
            assert_same(outcome, ours[key], path=key)
    assert ref["KL(q(z,h|x), p(z))"] == ("evaluating raised", ValueError)
    # the crossed KL is the closed form of N(x, 1.5^2) against N(z, 0.5^2) at the program's x and z
    x, z = ours["data"]["x"], ours["data"]["z"]
    closed = math.log(0.5 / 1.5) + (1.5 ** 2 + (x - z) ** 2) / (2 * 0.5 ** 2) - 0.5
    torch.testing.assert_close(ours["KL(q(z|x), p(x|z))"][1], closed.sum(-1))


def prog_analytic_divergences_without_a_closed_form() -> Any:
    """The analytic KL (and entropy) of a mixture, a flow or a marginal over one variable against a Normal prior:
    Pixyz builds each and raises a ValueError when it is evaluated. We raised a NotImplementedError (not also a
    ValueError) there."""
    import torch
    from torch import nn
    import pixyz.distributions as pd
    import pixyz.flows as F
    import pixyz.losses as L

    class R(pd.Normal):
        def __init__(self):
            super().__init__(var=["h"], cond_var=["x"], name="r")
            self.net = nn.Linear(3, 2)

        def forward(self, x):
            return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}

    prior = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    experts = [pd.Normal(loc=torch.randn(2), scale=torch.ones(2), var=["z"], name=f"q_{i}") for i in range(2)]
    mixture = pd.MixtureModel(distributions=experts,
                              prior=pd.Categorical(probs=torch.tensor([0.3, 0.7]), var=["c"], name="p_c"))
    flow = pd.TransformedDistribution(prior=pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z0"]),
                                      flow=F.PlanarFlow(2), var=["z"], name="q")
    marginal = (pd.Normal(loc="h", scale=1., var=["z"], cond_var=["h"], name="q") * R()).marginalize_var(["h"])
    data = {"x": torch.randn(4, 3)}
    out = {}
    for name, q in {"mixture": mixture, "flow": flow, "marginal": marginal}.items():
        out[f"KL({name}, prior)"] = _outcome(lambda: L.KullbackLeibler(q, prior), data)
        out[f"KL(prior, {name})"] = _outcome(lambda: L.KullbackLeibler(prior, q), data)
    return out


def test_an_analytic_kl_without_a_closed_form_raises_pixyzs_value_error() -> None:
    from pyro_dgm.utils.checks import NoClosedFormError

    ref, ours = run_both(prog_analytic_divergences_without_a_closed_form)
    for key, outcome in ref.items():
        assert outcome == ("evaluating raised", ValueError), (key, outcome)
        assert ours[key][0] == "evaluating raised" and issubclass(ours[key][1], NoClosedFormError), (key, ours[key])


def prog_a_value_loss_annealed_in_place() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, ValueLoss
    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
    beta = ValueLoss(0.0)
    loss = (beta * KullbackLeibler(q, prior)).mean()
    x = torch.ones(2, 1, dtype=torch.float64)
    out = {"type": type(beta.value).__name__, "dtype": str(beta.value.dtype), "keys": sorted(loss.state_dict())}
    beta.value.fill_(0.5)  # a beta-VAE's annealing, in place
    out["fill_"] = loss.eval({"x": x})
    out["text"] = str(loss)
    beta.value.copy_(torch.tensor(0.25))
    out["copy_"] = loss.eval({"x": x})
    beta.value.data = torch.tensor(2.0)
    out["data"] = loss.eval({"x": x})
    loss.load_state_dict({**loss.state_dict(), "loss1.loss1.value": torch.tensor(3.0)})
    out["load_state_dict"] = loss.eval({"x": x})
    out["a number in a float64 formula"] = (KullbackLeibler(q, prior) * 0.1).eval({"x": x})
    return out


def test_a_value_loss_holds_its_number_in_a_float32_buffer_as_pixyz() -> None:
    """``beta.value.fill_(0.5)`` raised ``AttributeError`` ('float' object has no attribute 'fill_') and Pixyz's
    state dicts (key ``loss1.loss1.value``) did not load. The KL of N(1, 1) against N(0, 1) is 1/2 per row, so the
    values are beta / 2 (a float64 formula sees the number rounded to float32, as in Pixyz)."""
    ref, ours = run_both(prog_a_value_loss_annealed_in_place)
    assert ref.pop("text") == r"mean \left(0 \right)"  # the construction value (porting.md)
    assert ours.pop("text") == r"mean \left(0.5 D_{KL} \left[q(z|x)||p(z) \right] \right)"
    assert_same(ref, ours)
    assert ours["type"] == "Tensor" and ours["dtype"] == "torch.float32" and "loss1.loss1.value" in ours["keys"]
    for key, beta in (("fill_", 0.5), ("copy_", 0.25), ("data", 2.0), ("load_state_dict", 3.0)):
        assert float(ours[key]) == pytest.approx(beta / 2)
    assert float(ours["a number in a float64 formula"][0]) == float(torch.tensor(0.1)) / 2
