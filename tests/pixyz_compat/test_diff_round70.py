"""A method a later notebook cell sets on a distribution class reaches the marginals built before it (probe p476:
``G.sample`` wrapped after ``(g * prior).marginalize_var("z")`` was built: Pixyz's marginal draws through the new
method, ours drew through the old one until ``g`` itself was called, and so did an adversarial term and a ``GAN``
over the marginal). Each program runs under Pixyz and here through the harness, from the same seed."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from pixyz_harness import assert_same, run_both


def _late_sample_patch(on_library_class: bool, use: str) -> Callable[[], Any]:
    """A generator ``g`` (a user's ``Deterministic``), its marginal ``∫ g(x|z) p(z) dz``, then a clamping wrapper set
    on ``G.sample`` (or on ``Deterministic.sample``, then put back); ``use``: the marginal's draws, or an adversarial
    term's value over the marginal."""

    def program() -> Any:
        import functools

        import torch
        from torch import nn
        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialJensenShannon

        class G(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 3)

            def forward(self, z: Any) -> dict:
                return {"x": torch.sigmoid(self.fc(z))}

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.fc = nn.Linear(3, 1)

            def forward(self, x: Any) -> dict:
                return {"t": torch.sigmoid(self.fc(x))}

        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        g, d = G(), D()
        with torch.no_grad():
            g.fc.weight.mul_(20)
        marginal = (g * prior).marginalize_var("z")
        cls = Deterministic if on_library_class else G
        original = cls.sample

        @functools.wraps(original)
        def clamped(self: Any, *args: Any, **kwargs: Any) -> dict:
            out = dict(original(self, *args, **kwargs))
            if "x" in out:
                out["x"] = out["x"].clamp(0.3, 0.7)
            return out

        cls.sample = clamped
        try:
            if use == "draws":
                x = marginal.sample(batch_n=200)["x"]
                return x.min(), x.max(), x.mean()
            loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), marginal, discriminator=d)
            return loss.eval({"x": torch.rand(4, 3)})
        finally:
            if on_library_class:
                cls.sample = original
            else:
                del cls.sample

    return program


@pytest.mark.parametrize("use", ["draws", "adversarial"])
@pytest.mark.parametrize("on_library_class", [False, True], ids=["users_class", "library_class"])
def test_a_sample_set_on_a_class_after_its_marginal_was_built(on_library_class: bool, use: str) -> None:
    """Draws in [0.3, 0.7] (ours: [0, 1]); the adversarial value 1.459206 (ours: 1.444819)."""
    assert_same(*run_both(_late_sample_patch(on_library_class, use)))


def _product_with_a_marginal(on_library_class: bool) -> Callable[[], Any]:
    """``h(y|x) * ∫ g(x|z) p(z) dz``, then a clamping ``sample`` set on ``G`` (or ``Normal``) by a later cell (p477:
    the product drew ``x`` in [-28.2, 26.6] where Pixyz's is in [-0.2, 0.2])."""

    def program() -> Any:
        import functools

        import torch
        from torch import nn
        from pixyz.distributions import Normal

        class G(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 2)

            def forward(self, z: Any) -> dict:
                return {"loc": 10 * self.fc(z), "scale": torch.ones_like(z) * 0.5}

        class H(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="h")
                self.fc = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                return {"loc": self.fc(x), "scale": torch.ones_like(x) * 0.7}

        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        joint = H() * (G() * prior).marginalize_var("z")
        cls = Normal if on_library_class else G
        original = cls.sample

        @functools.wraps(original)
        def clamped(self: Any, *args: Any, **kwargs: Any) -> dict:
            out = dict(original(self, *args, **kwargs))
            if "x" in out:
                out["x"] = out["x"].clamp(-0.2, 0.2)
            return out

        cls.sample = clamped
        try:
            s = joint.sample(batch_n=200)
            return s["x"].min(), s["x"].max(), s["y"].mean()
        finally:
            if on_library_class:
                cls.sample = original
            else:
                del cls.sample

    return program


@pytest.mark.parametrize("on_library_class", [False, True], ids=["users_class", "library_class"])
def test_a_sample_set_on_a_class_after_a_product_with_a_marginal_was_built(on_library_class: bool) -> None:
    assert_same(*run_both(_product_with_a_marginal(on_library_class)))


def _parts_get_params(kind: str, on_library_class: bool) -> Callable[[], Any]:
    """A mixture of two components of a user's class ``C``, a flow over a prior of that class, or a product of two
    experts of it, then a ``get_params`` set on ``C`` (or ``Normal``) by a later cell: loc + 3, scale × 2 (p477:
    the mixture's first component and the flow's prior drew, and the experts' product took, the old parameters)."""

    def program() -> Any:
        import functools

        import torch
        from torch import nn
        from pixyz.distributions import Categorical, MixtureModel, Normal, ProductOfNormal, TransformedDistribution
        from pixyz.flows import PlanarFlow

        class C(Normal):
            def __init__(self, m: float, var: str = "x") -> None:
                super().__init__(var=[var], loc=torch.full((2,), float(m)), scale=torch.ones(2), name=f"c{m}")

        class E(C):
            def __init__(self, cond: str) -> None:
                Normal.__init__(self, var=["z"], cond_var=[cond], name="e" + cond)
                self.fc = nn.Linear(2, 2)

            def forward(self, **kwargs: Any) -> dict:
                (v,) = kwargs.values()
                return {"loc": self.fc(v), "scale": torch.nn.functional.softplus(self.fc(v)) + 0.1}

        if kind == "mixture":
            d = MixtureModel([C(-2), C(2)], prior=Categorical(probs=torch.tensor([0.5, 0.5]), var=["k"], name="pk"))
        elif kind == "flow":
            d = TransformedDistribution(prior=C(0, "z"), flow=PlanarFlow(2), var=["y"], name="pf")
        else:
            d = ProductOfNormal([E("x1"), E("x2")], name="poe")
        cls = Normal if on_library_class else C
        original = cls.get_params

        @functools.wraps(original)
        def get_params(self: Any, params_dict: Any = {}, **kwargs: Any) -> dict:
            p = dict(original(self, params_dict, **kwargs))
            return {"loc": p["loc"] + 3.0, "scale": p["scale"] * 2.0}

        cls.get_params = get_params
        try:
            if kind == "mixture":
                s = d.sample(batch_n=400, return_hidden=True)
                first = s["k"][:, 0] == 1
                return s["x"][first].mean(), s["x"][~first].mean()
            if kind == "flow":
                s = d.sample(batch_n=400)
                return s["z"].mean(), s["z"].std(), d.get_log_prob(s).detach().mean()
            return d.sample_mean({"x1": torch.ones(1, 2), "x2": -torch.ones(1, 2)}).detach()
        finally:
            if on_library_class:
                cls.get_params = original
            else:
                del cls.get_params

    return program


@pytest.mark.parametrize("on_library_class", [False, True], ids=["users_class", "library_class"])
@pytest.mark.parametrize("kind", ["mixture", "flow", "experts"])
def test_a_get_params_set_on_a_class_after_a_composite_of_it_was_built(kind: str, on_library_class: bool) -> None:
    """(On ``Normal``, the product of experts' own parameters do not pass through the patch, only its experts': its
    class has its own ``get_params``, as Pixyz's has; p478: +3 on the mean, ours went through it twice.)"""
    assert_same(*run_both(_parts_get_params(kind, on_library_class)))
