"""Sixty-fifth round (probe p430, the attributes and internals that real Pixyz code reads), under Pixyz and here
(:mod:`pixyz_harness`):

* a subclass of ``ProductOfNormal`` overriding Pixyz's ``_compute_expert_params`` or ``_get_expert_params`` (a
  tempered or generalized product) was silently ignored: the plain product was used (loc 1.3333 where Pixyz's
  override gives 2); the hooks are called now where a subclass overrides one;
* Pixyz private hooks that this library does not call (``ElementWiseProductOfNormal``'s, ``MixtureOfNormal``'s,
  ``BatchNorm2d._unsqueeze``): a subclass overriding one is refused by name (``ActNorm2d``'s are called since
  ``test_diff_round67.py``);
* ``var``, ``cond_var`` and ``input_var`` of a product, renaming or marginal were its own lists: a caller's
  ``keys += ["x"]`` changed the distribution (Pixyz builds them anew from its graph at each read);
* ``IterativeLoss(..., timestep_var=None).timestep_var`` was ``()`` (Pixyz keeps ``None``; its default is ``()``);
* (probe p431) a constant changed through ``.data`` (``prior.scale.data.fill_(2.)``), which torch's version counter
  does not count: a standard N(0, I) prior kept being scored and compared as N(0, I) (a VAE trained against the old
  prior, where ``compile=True`` and Pixyz took the new one), and a ``Beta`` or ``RelaxedBernoulli`` kept the torch
  distribution built from the old values.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _poe_program(kind: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ProductOfNormal
        from pixyz.losses import KullbackLeibler

        if kind == "compute":
            class Custom(ProductOfNormal):
                @staticmethod
                def _compute_expert_params(loc, scale, weight):  # type: ignore[no-untyped-def]
                    return loc.mean(0), torch.full_like(scale[0], 2.0)  # the experts' mean means, scale 2
        elif kind == "compute_super":
            class Custom(ProductOfNormal):  # type: ignore[no-redef]
                @staticmethod
                def _compute_expert_params(loc, scale, weight):  # type: ignore[no-untyped-def]
                    out_loc, out_scale = ProductOfNormal._compute_expert_params(loc, scale, weight)
                    return out_loc, out_scale * 1.5  # a tempered product: Pixyz's own rule, widened
        else:
            class Custom(ProductOfNormal):  # type: ignore[no-redef]
                def _get_expert_params(self, params_dict={}, **kwargs):  # type: ignore[no-untyped-def]  # noqa: B006
                    loc, scale, weight = super()._get_expert_params(params_dict, **kwargs)
                    return loc, scale, weight * 2  # every precision doubled, the prior's too

        torch.manual_seed(0)
        e1 = Normal(loc="a", scale="sa", var=["z"], cond_var=["a", "sa"], name="e1")
        e2 = Normal(loc="b", scale="sb", var=["z"], cond_var=["b", "sb"], name="e2")
        poe = Custom([e1, e2])
        a = torch.tensor([[0.0, 1.0], [2.0, -1.0]], requires_grad=True)
        d = {"a": a, "sa": torch.ones(2, 2), "b": torch.tensor([[4.0, 0.0], [1.0, 1.0]]),
             "sb": torch.tensor([[0.5, 2.0], [1.0, 0.25]])}
        params = poe.get_params(d)
        kl = KullbackLeibler(poe, Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"])).eval(d)
        grad, = torch.autograd.grad(kl.sum(), a)
        alone = poe.get_params({"a": a, "sa": torch.ones(2, 2)})
        return {"loc": params["loc"], "scale": params["scale"], "mean": poe.sample_mean(d), "kl": kl, "grad": grad,
                "a_alone": alone["loc"]}  # (Pixyz's get_log_prob of a product raises)

    return program


@pytest.mark.parametrize("kind", ["compute", "compute_super", "expert_params"])
def test_a_product_of_normal_subclass_overriding_pixyzs_hooks_is_computed_with_them(kind: str) -> None:
    ref, ours = run_both(_poe_program(kind))
    assert_same(ref, ours)
    if kind == "compute":  # (the override's rule, not the product's 1.3333)
        assert torch.allclose(ours["loc"], torch.tensor([[2.0, 0.5], [1.5, 0.0]]))


def test_the_hooks_alone_give_the_products_numbers() -> None:
    """Pixyz's formula in the hooks, called directly, equals the product computed without them (precisions of
    1, 1 and 4 with weights 1: mean (a + 4b) / 6, variance 1/6)."""
    from pyro_dgm.distributions import Normal, ProductOfNormal

    e1 = Normal(loc="a", scale=torch.tensor(1.), var=["z"], cond_var=["a"], name="e1")
    e2 = Normal(loc="b", scale=torch.tensor(0.5), var=["z"], cond_var=["b"], name="e2")
    poe = ProductOfNormal([e1, e2])
    d = {"a": torch.tensor([[3.0]]), "b": torch.tensor([[1.0]])}
    loc, scale = poe._compute_expert_params(*poe._get_expert_params(d))
    params = poe.get_params(d)
    torch.testing.assert_close(loc, params["loc"])
    torch.testing.assert_close(scale, params["scale"].expand_as(scale))
    torch.testing.assert_close(loc, torch.tensor([[7.0 / 6]]))


@pytest.mark.parametrize("base,hook", [
    ("ElementWiseProductOfNormal", "_get_mask"),
    ("ElementWiseProductOfNormal", "_compute_expert_params"),
    ("MixtureOfNormal", "_compute_expert_params"),
    ("BatchNorm2d", "_unsqueeze"),
])
def test_a_subclass_overriding_a_hook_this_library_does_not_call_is_refused_by_name(base: str, hook: str) -> None:
    import pyro_dgm.distributions as D
    import pyro_dgm.flows as F

    cls = getattr(D, base, None) or getattr(F, base)
    with pytest.raises(TypeError, match=rf"Custom: overrides {hook}, a private method of Pixyz's {base}"):
        type("Custom", (cls,), {hook: lambda self, *a: None})


def test_the_variables_of_a_product_renaming_or_marginal_are_new_lists() -> None:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
        p = Normal(loc="z", scale=torch.tensor(1.), var=["y"], cond_var=["z"], name="p")
        joint = p * q
        keys = joint.var
        keys += ["x"]
        joint.input_var.append("w")
        renamed = q.replace_var(z="w")
        renamed.cond_var.append("y")
        marginal = joint.marginalize_var("z")
        marginal.var.reverse()
        torch.manual_seed(1)
        sample = joint.sample({"x": torch.zeros(2, 1)})
        return {"joint": (joint.var, joint.cond_var, joint.input_var, joint.prob_text), "keys": keys,
                "renamed": (renamed.var, renamed.cond_var, renamed.prob_text),
                "marginal": (marginal.var, marginal.prob_text), "sample": sorted(sample),
                "fresh": joint.var is not joint.var}

    ref, ours = run_both(program)
    assert ref["joint"][3] == "p(y,z|x)" and ref["fresh"]
    assert_same(ref, ours)


def test_timestep_var_keeps_what_was_given() -> None:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss, KullbackLeibler

        q = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q")
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
        given = IterativeLoss(KullbackLeibler(q, prior), max_iter=2, series_var=["x"], timestep_var=None)
        default = IterativeLoss(KullbackLeibler(q, prior), max_iter=2, series_var=["x"])
        return (repr(given.timestep_var), repr(default.timestep_var), given.eval({"x": torch.zeros(2, 3, 2)}),
                str(given))

    ref, ours = run_both(program)
    assert ref[:2] == ("None", "()")
    assert_same(ref, ours)


def test_a_standard_prior_changed_through_data_is_scored_with_its_new_scale() -> None:
    """N(0, 1) changed to N(0, 2) through ``.data``: its log-density and KL are the closed forms of N(0, 2) (as under
    Pixyz), and a VAE-like training step after the change follows Pixyz's."""
    def program() -> Any:
        import math

        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
        q0 = Normal(loc=torch.tensor(0.5), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="q")
        z = torch.ones(1, 2)
        before = (prior.get_log_prob({"z": z}), KullbackLeibler(q0, prior).eval())
        prior.scale.data.fill_(2.0)
        after = (prior.get_log_prob({"z": z}), KullbackLeibler(q0, prior).eval())

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                return {"loc": self.lin(x), "scale": torch.ones_like(x)}

        torch.manual_seed(0)
        q = Q()
        p2 = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
        model = Model(KullbackLeibler(q, p2).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1})
        losses = [model.train({"x": torch.full((4, 2), float(i))}) for i in range(2)]
        p2.scale.data.fill_(2.0)
        losses += [model.train({"x": torch.full((4, 2), float(i))}) for i in range(2, 4)]
        exact = -2 * (0.5 * math.log(2 * math.pi * 4) + 1 / 8)
        return before, after, exact, losses, q.lin.weight

    ref, ours = run_both(program)
    assert abs(float(ref[1][0]) - ref[2]) < 1e-5  # (Pixyz's number is the closed form of N(0, 2))
    assert_same(ref, ours)


@pytest.mark.parametrize("family", ["Beta", "RelaxedBernoulli"])
def test_a_family_whose_torch_object_copies_its_constants_sees_a_change_through_data(family: str) -> None:
    def program() -> Any:
        import torch

        import pixyz.distributions as D

        if family == "Beta":
            d = D.Beta(concentration1=torch.tensor([2., 3.]), concentration0=torch.tensor([1., 1.]), var=["x"])
            x = torch.full((1, 2), 0.4)
            before = d.get_log_prob({"x": x})
            d.concentration1.data.copy_(torch.tensor([5., 1.]))
            fresh = D.Beta(concentration1=torch.tensor([5., 1.]), concentration0=torch.tensor([1., 1.]), var=["x"])
        else:
            d = D.RelaxedBernoulli(probs=torch.tensor([.2, .3]), temperature=torch.tensor(0.5), var=["x"])
            x = torch.full((1, 2), 0.3)
            before = d.get_log_prob({"x": x})
            d.probs.data.mul_(0.9)
            fresh = D.RelaxedBernoulli(probs=torch.tensor([.2, .3]) * 0.9, temperature=torch.tensor(0.5), var=["x"])
        return before, d.get_log_prob({"x": x}), fresh.get_log_prob({"x": x})

    ref, ours = run_both(program)
    torch.testing.assert_close(ours[1], ours[2])  # (the new values', as a distribution built from them scores)
    assert_same(ref, ours)


def test_hooks_from_a_mixin_or_set_later_are_refused_and_a_subclass_with_its_own_callers_is_not() -> None:
    """(probe p432) A mixin's hook is refused when the class is made, one set on the class later when the product
    is next used; a flow that overrides ``forward`` and ``inverse`` itself may keep a helper named ``_scale``."""
    from torch import nn

    from pyro_dgm.distributions import ElementWiseProductOfNormal, Normal
    from pyro_dgm.flows import ActNorm2d

    class Mixin:
        @staticmethod
        def _compute_expert_params(loc, scale, weight):  # type: ignore[no-untyped-def]
            return loc.mean(0), scale[0]

    with pytest.raises(TypeError, match="ViaMixin: overrides _compute_expert_params"):
        type("ViaMixin", (Mixin, ElementWiseProductOfNormal), {})

    class Net(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    later = type("Later", (ElementWiseProductOfNormal,), {})
    q = later(Net())
    assert q.get_params({"x": torch.ones(3, 2)})["loc"].shape == (3, 2)
    later._compute_expert_params = Mixin._compute_expert_params
    with pytest.raises(TypeError, match="Later: overrides _compute_expert_params"):
        q.get_params({"x": torch.ones(3, 2)})

    class OwnFlow(ActNorm2d):  # (its own forward and inverse: its _scale is its own helper)
        def _scale(self, x):  # type: ignore[no-untyped-def]
            return x * 2

        def forward(self, x, y=None, compute_jacobian=True):  # type: ignore[no-untyped-def]
            return self._scale(x)

        def inverse(self, z, y=None):  # type: ignore[no-untyped-def]
            return z / 2

    torch.testing.assert_close(OwnFlow(2)(torch.ones(1, 2, 1, 1)), torch.full((1, 2, 1, 1), 2.0))


def test_a_product_with_its_own_prior_refuses_the_hooks_whose_prior_is_standard() -> None:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    class Same(ProductOfNormal):
        @staticmethod
        def _compute_expert_params(loc, scale, weight):  # type: ignore[no-untyped-def]
            return ProductOfNormal._compute_expert_params(loc, scale, weight)

    e = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="e")
    prior = Normal(loc=torch.tensor(1.), scale=torch.tensor(0.5), var=["z"], name="pz")
    with pytest.raises(TypeError, match=r"whose prior expert is N\(0, 1\); with prior=pz\(z\) given"):
        Same([e], prior=prior).get_params({"x": torch.full((1, 1), 3.0)})
    plain = ProductOfNormal([e], prior=prior).get_params({"x": torch.full((1, 1), 3.0)})  # precisions 4 and 1
    torch.testing.assert_close(plain["loc"], torch.tensor([[7.0 / 5]]))


def test_an_image_sized_standard_prior_changed_through_data_is_seen() -> None:
    """3 x 64 x 64 constants (12288 elements, p432): N(0, I) changed to N(0, 4 I) scores as N(0, 4 I)."""
    from pyro_dgm.distributions import Normal

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3, 64, 64])
    z = torch.ones(1, 3, 64, 64)
    prior.get_log_prob({"z": z})
    prior.scale.data.fill_(2.0)
    expected = torch.distributions.Normal(0., 2.).log_prob(z).sum()
    torch.testing.assert_close(prior.get_log_prob({"z": z}), expected.reshape(1))
