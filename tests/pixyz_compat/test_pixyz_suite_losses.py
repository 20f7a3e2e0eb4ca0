"""Pixyz 0.3.3's loss tests (``tests/losses/``), re-written as differential programs: the Loss arithmetic
(``ValueLoss``, ``Parameter``, operators, ``abs/mean/sum/detach``, ``constant_var``, ``expectation``), ``Expectation``
and ``REINFORCE``, ``IterativeLoss``, the divergences and entropies (analytic and sampled), ``LogProb``/``Prob``,
``ELBO``, ``MinLoss``/``MaxLoss``, ``WassersteinDistance`` and ``eval``'s options, under Pixyz 0.3.3 and pyro_dgm.

Input variables are compared as sets where Pixyz builds them from a ``set`` (their order follows string hashes).
MMD's value is not compared here: Pixyz's estimator is biased (``test_diff_losses.py`` shows both).
"""
from __future__ import annotations

import pytest

from pixyz_harness import docstring_vae, run_pixyz, run_pyro_dgm, same


# ============================================================================================= arithmetic
def value_and_parameter_losses():
    import torch
    from pixyz.losses.losses import ValueLoss, Parameter
    a, b = ValueLoss(2), ValueLoss(3.)
    x = Parameter("x")
    out = []
    for loss in (a + b, a - b, a * b, a / b, -a, a + 1, 1 + a, 2 - a, 2 * a, 2 / b, x * a, (x + 1) / 2, -x,
                 x - x, x.abs(), x.mean(), x.sum(), x.detach(), (a + x).constant_var({"x": 1.})):
        out.append((str(loss), loss.loss_text, sorted(loss.input_var),
                    loss.eval({"x": torch.tensor([-1., 2.])}) if "x" in loss.input_var else loss.eval()))
    return out


def loss_eval_options():
    import torch
    from pixyz.losses import Parameter
    from pixyz.losses.losses import ValueLoss
    loss = Parameter("x").mean() * 2 + ValueLoss(1)
    x = {"x": torch.tensor([1., 2., 3.]), "y": torch.ones(1)}
    v, d = loss.eval(x, return_dict=True)
    v2, d2 = loss.eval(x, return_dict=True, return_all=False)
    return loss.eval(x), v, sorted(d), v2, sorted(d2), loss.input_var


def constant_var_and_detach():
    import torch
    from pixyz.losses import Parameter, ConstantVar
    x, y = Parameter("x"), Parameter("y")
    c = (x * y).constant_var({"y": torch.tensor(3.)})
    w = torch.tensor([1., 2.], requires_grad=True)
    d = (x.detach() * 2).eval({"x": w})
    return (str(c), sorted(c.input_var), c.eval({"x": torch.tensor([1., 2.])}), isinstance(c, ConstantVar),
            d.requires_grad, (x * 2).eval({"x": w}).requires_grad)


def min_and_max_losses():
    import torch
    from pixyz.losses.losses import ValueLoss, Parameter, MinLoss, MaxLoss
    a, x = ValueLoss(2), Parameter("x")
    mn, mx = MinLoss(a, x), MaxLoss(a, x)
    vals = {"x": torch.tensor(3.)}
    return str(mn), str(mx), mn.eval(vals), mx.eval(vals), sorted(mn.input_var)


@pytest.mark.parametrize("program", [value_and_parameter_losses, loss_eval_options, constant_var_and_detach,
                                     min_and_max_losses])
def test_loss_arithmetic(program) -> None:  # type: ignore[no-untyped-def]
    same(program)


def add_a_string():
    from pixyz.losses import Parameter
    return Parameter("x") + "y"


def eval_without_input():
    from pixyz.losses import Parameter
    return Parameter("x").eval({})


@pytest.mark.parametrize("program", [
    add_a_string,  # pyro_dgm's LossArgumentError is a TypeError and Pixyz's ValueError
    eval_without_input])
def test_loss_errors(program) -> None:  # type: ignore[no-untyped-def]
    kinds = []
    for run in (run_pixyz, run_pyro_dgm):
        with pytest.raises(Exception) as info:
            run(program)
        kinds.append(info.type)
    assert issubclass(kinds[1], kinds[0]), f"Pixyz raises {kinds[0]}, pyro_dgm {kinds[1]}"


# ================================================================================ Expectation, REINFORCE
def expectation_of_log_prob():
    import torch
    from pixyz.losses import Expectation, LogProb
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=1.)
    p = Normal(var=["y"], cond_var=["z"], loc="z", scale=1.)
    e = Expectation(q, LogProb(p))
    e2 = p.log_prob().expectation(q)
    vals = {"x": torch.zeros(3, 1), "y": torch.ones(3, 1)}
    return (sorted(e.input_var), str(e), str(e2), e.eval(vals), e2.eval(vals),
            Expectation(q, LogProb(p), sample_shape=(4,)).eval(vals), e.mean().eval(vals))


def expectation_of_a_marginal_input():
    import torch
    from pixyz.losses import Expectation
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=1.)
    p = Normal(var=["y"], cond_var=["z", "w"], loc="z", scale="w")
    e = Expectation(q, p.log_prob())
    return sorted(e.input_var), e.eval({"x": torch.zeros(2, 1), "y": torch.ones(2, 1), "w": torch.ones(2, 1)})


def reinforce():
    import torch
    from pixyz.losses.losses import REINFORCE
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=1.)
    p = Normal(var=["y"], cond_var=["z"], loc="z", scale=1.)
    r = REINFORCE(q, p.log_prob(), sample_shape=[3])
    vals = {"x": torch.zeros(2, 1, requires_grad=True), "y": torch.ones(2, 1)}
    v = r.eval(vals)
    return str(r), sorted(r.input_var), v


@pytest.mark.parametrize("program", [expectation_of_log_prob, expectation_of_a_marginal_input, reinforce])
def test_expectation(program) -> None:  # type: ignore[no-untyped-def]
    same(program)


# ======================================================================================= IterativeLoss
def iterative_loss_program():
    """Pixyz's IterativeLoss docstring model (a VRNN-like step loss) at small size."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from pixyz.distributions import Bernoulli, Normal, Deterministic
    from pixyz.losses import KullbackLeibler, IterativeLoss, LogProb, Expectation

    x_dim, h_dim, z_dim = 4, 3, 2

    class Encoder(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x", "h_prev"], name="q")
            self.fc = nn.Linear(x_dim + h_dim, z_dim * 2)

        def forward(self, x, h_prev):
            h = self.fc(torch.cat((x, h_prev), dim=-1))
            return {"loc": h[:, :z_dim], "scale": F.softplus(h[:, z_dim:])}

    class Decoder(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z", "h_prev"], name="p")
            self.fc = nn.Linear(z_dim + h_dim, x_dim)

        def forward(self, z, h_prev):
            return {"probs": torch.sigmoid(self.fc(torch.cat((z, h_prev), dim=-1)))}

    class Prior(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["h_prev"], name="p")
            self.fc = nn.Linear(h_dim, z_dim * 2)

        def forward(self, h_prev):
            h = self.fc(h_prev)
            return {"loc": h[:, :z_dim], "scale": F.softplus(h[:, z_dim:])}

    class Recurrence(Deterministic):
        def __init__(self):
            super().__init__(var=["h"], cond_var=["x", "z", "h_prev"], name="f")
            self.rnn = nn.GRUCell(x_dim + z_dim, h_dim)

        def forward(self, x, z, h_prev):
            return {"h": self.rnn(torch.cat((z, x), dim=-1), h_prev)}

    encoder, decoder, prior, rec = Encoder(), Decoder(), Prior(), Recurrence()
    step_loss = (KullbackLeibler(encoder, prior) - Expectation(encoder, LogProb(decoder))).mean()
    step_loss = Expectation(rec * encoder, step_loss) if False else step_loss
    loss = IterativeLoss(step_loss, max_iter=5, series_var=["x"], update_value={"h": "h_prev"})
    x = torch.bernoulli(torch.full((5, 2, x_dim), 0.5))
    value = loss.eval({"x": x, "h_prev": torch.zeros(2, h_dim)})
    return str(loss), sorted(loss.input_var), value


def iterative_loss_with_slice_step():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss, LogProb, Parameter
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1.)
    step = LogProb(p).mean()
    loss = IterativeLoss(step, max_iter=3, series_var=["x", "z"])
    loss2 = IterativeLoss(step * Parameter("s"), series_var=["x", "z"], timestep_var=["s"])
    x, z = torch.randn(3, 2, 1), torch.randn(3, 2, 1)
    mask = torch.tensor([1., 0., 1.])
    return (str(loss), str(loss2), loss.eval({"x": x, "z": z}), loss2.eval({"x": x, "z": z}), loss2.input_var,
            loss.eval({"x": x, "z": z}, mask=mask), loss.input_var)


@pytest.mark.parametrize("program", [iterative_loss_program, iterative_loss_with_slice_step])
def test_iterative_loss(program) -> None:  # type: ignore[no-untyped-def]
    same(program)


def iterative_loss_without_length():
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss
    return IterativeLoss(Normal(var=["x"], loc=0., scale=1.).log_prob())


def test_iterative_loss_needs_a_length() -> None:
    for run in (run_pixyz, run_pyro_dgm):
        with pytest.raises(ValueError):
            run(iterative_loss_without_length)


# ================================================================================ divergences and entropies
def kl_and_entropies():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, Entropy, CrossEntropy
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.full((2,), 0.5), name="q")
    p = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    x = {"x": torch.randn(3, 2)}
    out = {}
    for name, loss in [("kl", KullbackLeibler(q, p)), ("kl_dim", KullbackLeibler(q, p, dim=1)),
                       ("kl_mc", KullbackLeibler(q, p, analytical=False, sample_shape=[50])),
                       ("entropy", Entropy(q)), ("entropy_mc", Entropy(q, analytical=False, sample_shape=[10])),
                       ("ce", CrossEntropy(q, p)), ("ce_mc", CrossEntropy(q, p, analytical=False))]:
        out[name] = (str(loss), loss.loss_text, sorted(loss.input_var), loss.eval(x))
    return out


def elbo_and_pdf():
    import torch
    from pixyz.losses import ELBO, LogProb, Prob
    q, p, prior, x = docstring_vae()
    joint = p * prior
    elbo = ELBO(joint, q)
    lp, pr = LogProb(p), Prob(p)
    z = q.sample({"x": x})["z"]
    return (str(elbo), sorted(elbo.input_var), elbo.eval({"x": x}), str(lp), str(pr),
            lp.eval({"x": x, "z": z}), pr.eval({"x": x, "z": z}), str(p.log_prob(sum_features=False)),
            p.log_prob(sum_features=False).eval({"x": x, "z": z}), p.prob().eval({"x": x, "z": z}))


def vae_loss():
    import torch
    from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
    q, p, prior, x = docstring_vae()
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    value = loss.eval({"x": x})
    value.backward()
    return str(loss), loss.loss_text, value, q.fc1.weight.grad, p.fc2.bias.grad


def wasserstein():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import WassersteinDistance
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    q = Normal(var=["x"], cond_var=["z"], loc="z", scale=2., name="q")
    w = WassersteinDistance(p, q)
    return str(w), sorted(w.input_var), w.eval({"z": torch.zeros(4, 3)}).shape


@pytest.mark.parametrize("program", [kl_and_entropies, elbo_and_pdf, vae_loss, wasserstein])
def test_divergences(program) -> None:  # type: ignore[no-untyped-def]
    same(program, rtol=1e-5, atol=1e-5)


def mmd_texts():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import MMD
    p = Normal(var=["z"], cond_var=["x"], loc="x", scale=1., name="p")
    q = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="q")
    m = MMD(p, q, kernel="gaussian")
    m2 = MMD(p, q, kernel="inv-multiquadratic")
    return str(m), str(m2), sorted(m.input_var), m.eval({"x": torch.zeros(8, 2)}).shape


def test_mmd_texts_and_shapes() -> None:
    same(mmd_texts)


def constant_var_input_var():
    import torch
    from pixyz.losses import Parameter
    return (Parameter("x") * Parameter("y")).constant_var({"y": torch.tensor(3.)}).input_var


def test_constant_var_input_var_is_a_set() -> None:
    same(constant_var_input_var)
