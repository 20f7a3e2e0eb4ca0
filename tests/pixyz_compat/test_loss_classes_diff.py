"""Pixyz's loss classes that pyro_dgm adds under Pixyz's names: ``Divergence`` (to subclass), the analytic classes
``AnalyticalKullbackLeibler`` and ``AnalyticalEntropy``, and ``DataParalleledLoss`` from ``pixyz.losses``; each
program runs under both libraries (:mod:`pixyz_harness`)."""
from __future__ import annotations

import pyro
import pytest
import torch
from pixyz_harness import assert_same, run_both


def _custom_divergence():
    import sympy
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses.losses import Divergence
    from pixyz.utils import get_dict_values

    class MeanGap(Divergence):  # a user's divergence, written as Pixyz's documentation shows
        def __init__(self, p, q):
            super().__init__(p, q)

        @property
        def _symbol(self):
            return sympy.Symbol("G \\left[{}||{} \\right]".format(self.p.prob_text, self.q.prob_text))

        def forward(self, x_dict, **kwargs):
            gap = (self.p.sample_mean(get_dict_values(x_dict, self.p.input_var, True))
                   - self.q.sample_mean(get_dict_values(x_dict, self.q.input_var, True)))
            return gap.abs().sum(-1), {}

    p = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q")
    q = Normal(var=["z"], loc=torch.tensor(0.5), scale=torch.tensor(1.0), name="p")
    gap = MeanGap(p, q)
    x = torch.tensor([[1.0], [-1.0]])
    return {"text": str(gap), "input_var": gap.input_var, "value": gap.eval({"x": x}),
            "sum_text": str(gap.mean() + 1), "sum": (gap.mean() + 1).eval({"x": x})}


def _analytic_classes():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses.divergences import AnalyticalKullbackLeibler
    from pixyz.losses.entropy import AnalyticalEntropy

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.0), features_shape=[2], name="q")
    p = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p")
    x = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    kl, h = AnalyticalKullbackLeibler(q, p), AnalyticalEntropy(q)
    kl_dim = AnalyticalKullbackLeibler(q, p, dim=1)
    return {"kl_text": str(kl), "kl": kl.eval({"x": x}), "kl_dim": kl_dim.eval({"x": x}),
            "h_text": str(h), "h": h.eval({"x": x}), "input_var": kl.input_var}


def _isinstance_divergence():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler
    from pixyz.losses.losses import Divergence, Loss

    p = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0))
    q = Normal(var=["z"], loc=torch.tensor(1.0), scale=torch.tensor(1.0), name="q")
    return [isinstance(KullbackLeibler(p, q), Divergence), isinstance(KullbackLeibler(p, q), Loss),
            isinstance(p.log_prob(), Divergence)]


def _classes_of_the_default_forms():
    """Pixyz's ``KullbackLeibler(p, q)`` and ``Entropy(p)`` are functions returning the analytic classes (the Monte
    Carlo forms are other losses): type and isinstance checks on them, and the values, as in Pixyz."""
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import Entropy, KullbackLeibler
    from pixyz.losses.divergences import AnalyticalKullbackLeibler
    from pixyz.losses.entropy import AnalyticalEntropy

    p = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), name="p")
    q = Normal(var=["z"], loc=torch.tensor(1.0), scale=torch.tensor(2.0), name="q")
    out = []
    for loss in (KullbackLeibler(p, q), KullbackLeibler(p, q, None, True), KullbackLeibler(p, q, analytical=True),
                 Entropy(p), Entropy(p, True)):
        out.append((type(loss).__name__, isinstance(loss, (AnalyticalKullbackLeibler, AnalyticalEntropy)),
                    str(loss), loss.eval()))
    mc = [KullbackLeibler(p, q, analytical=False), Entropy(q, analytical=False)]
    out.append([isinstance(loss, (AnalyticalKullbackLeibler, AnalyticalEntropy)) for loss in mc])
    return out


def _pixyz_instance_attributes():
    """Attributes a Pixyz object carries that users read: a distribution's ``replace_params_dict``, an
    ``Expectation``'s (and so an ``ELBO``'s) ``sample_shape``, an ``IterativeLoss``'s ``timpstep_symbol``."""
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import ELBO, Expectation, IterativeLoss, LogProb

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    two = Normal(loc="a", scale="b", var=["x"], cond_var=["b", "a"])
    return {"replace_params_dict": [q.replace_params_dict, prior.replace_params_dict, two.replace_params_dict],
            "sample_shape": [Expectation(q, LogProb(p), sample_shape=(3,)).sample_shape,
                             Expectation(q, LogProb(p)).sample_shape, ELBO(p * prior, q).sample_shape],
            "timpstep_symbol": [str(IterativeLoss(LogProb(p), max_iter=2, series_var=["x"]).timpstep_symbol),
                                str(IterativeLoss(LogProb(p.replace_var(z="s")), max_iter=2, series_var=["x"],
                                                  timestep_var=["s"]).timpstep_symbol)]}


def _adversarial_children():
    """The sub-modules of Pixyz's adversarial divergences (a subclass may use ``self.bce_loss``)."""
    import torch
    from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialJensenShannon, AdversarialKullbackLeibler, AdversarialWassersteinDistance

    class Discriminator(Deterministic):
        def __init__(self):
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x):
            return {"t": torch.sigmoid(self.fc(x))}

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    losses = [cls(EmpiricalDistribution(var=["x"]), p, Discriminator())
              for cls in (AdversarialJensenShannon, AdversarialKullbackLeibler, AdversarialWassersteinDistance)]
    return [sorted(dict(loss.named_children())) for loss in losses] + [losses[0].bce_loss(
        torch.tensor([0.25, 0.75]), torch.tensor([0.0, 1.0]))]


def _data_paralleled_loss():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import DataParalleledLoss, KullbackLeibler

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q")
    p = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[1])
    loss = DataParalleledLoss(KullbackLeibler(q, p))  # one device: the wrapped loss
    return {"text": str(loss), "value": loss.eval({"x": torch.tensor([[1.0], [2.0]])})}


@pytest.mark.parametrize("program", [_custom_divergence, _analytic_classes, _isinstance_divergence,
                                     _classes_of_the_default_forms, _pixyz_instance_attributes,
                                     _adversarial_children, _data_paralleled_loss], ids=lambda f: f.__name__.strip("_"))
def test_same_as_pixyz(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)


def _kl_to_a_scalar_prior():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q")
    p = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0))  # no features_shape: scalar parameters
    return KullbackLeibler(q, p).eval({"x": torch.tensor([[1.0], [2.0]])})


@pytest.mark.parametrize("validate", [True, False], ids=["validated", "closed-forms"])
def test_kl_to_a_scalar_prior(validate):
    """A prior of scalar parameters (no features_shape) is broadcast to q's feature dims, as Pixyz does
    (tensor([0.5, 2.0])), with argument validation on and off (off, the closed forms run where they apply)."""
    pyro.enable_validation(validate)  # (the autouse fixture of conftest.py restores the session's setting)
    ref, ours = run_both(_kl_to_a_scalar_prior)
    torch.testing.assert_close(ref, torch.tensor([0.5, 2.0]))
    assert_same(ref, ours)
