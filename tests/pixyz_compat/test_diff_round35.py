"""Thirty-fifth round: user subclasses and what Pixyz code touches of them (probe p167), and objects changed after
they are built (probe p166), under Pixyz and here (:mod:`pixyz_harness`), against closed forms.

- A Pixyz-style family's ``distribution_torch_class`` was read once, when the distribution was built: a function
  (not a class) was refused, a property that reads an attribute set after ``super().__init__`` failed there, and a
  property that depends on the instance's state, or an attribute assigned later, kept the first class. Pixyz reads
  it at every ``set_dist``. Likewise ``params_keys``.
- A user's own torch class whose ``__init__`` takes no ``validate_args`` could not be used (Pixyz passes none).
- A ``set_dist`` that stores a plain torch distribution made the KL, entropy and moments fail (``to_event``), and an
  overridden ``dist`` property was ignored: Pixyz's draws, scores and moments read ``self.dist``.
- A ``MixtureModel`` scored and drew its components with their family, ignoring their own ``get_log_prob`` and
  ``sample``, which Pixyz's mixture calls.
- A method set on a distribution class after the class was made (a later notebook cell) was ignored by products.
- A constant changed after construction to an invalid value (``scale = -1``: assigned, changed in place or loaded)
  scored NaN and gave an analytic KL of 0, where Pixyz (and a distribution built so) raise.
- A flow's memory of its last draw, and ``lru_cache_for_sample_dict``, did not see a forward hook or a replaced
  ``forward`` of the networks.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm

_X1 = torch.tensor([[0.5, -1.0, 2.0]])


def _clear_pixyz_cache() -> None:
    from pixyz.distributions.distributions import DistributionBase

    cells = dict(zip(DistributionBase.get_params.__code__.co_freevars, DistributionBase.get_params.__closure__))
    cells["wrapper"].cell_contents.cache_clear()


def _function_as_torch_class() -> Any:
    import torch

    from pixyz.distributions.distributions import DistributionBase

    def indep_normal(loc: Any, scale: Any) -> Any:
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)

    class IndepNormal(DistributionBase):
        params_keys = ["loc", "scale"]
        distribution_torch_class = staticmethod(indep_normal)
        distribution_name = "IndepNormal"
        has_reparam = True

    p = IndepNormal(var=["x"], loc=torch.zeros(3), scale=torch.full((3,), 2.))
    return {"log_prob": p.get_log_prob({"x": _X1}), "entropy": p.get_entropy()}


def test_a_function_as_distribution_torch_class_scores_as_pixyz_and_the_closed_form() -> None:
    ref, ours = run_both(_function_as_torch_class)
    assert_same(ref, ours)
    normal = torch.distributions.Normal(torch.zeros(3), torch.full((3,), 2.))
    torch.testing.assert_close(ours["log_prob"], normal.log_prob(_X1).sum(-1))
    torch.testing.assert_close(ours["entropy"], normal.entropy().sum(-1, keepdim=True))


def _torch_class_on_state() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.distributions.distributions import DistributionBase

    class Flex(DistributionBase):
        heavy = False
        params_keys = ["loc", "scale"]
        distribution_name = "Flex"
        has_reparam = True

        @property
        def distribution_torch_class(self) -> Any:
            return torch.distributions.Laplace if self.heavy else torch.distributions.Normal

    class N2(Normal):
        distribution_torch_class = torch.distributions.Normal

    x = torch.tensor([[0.5]])
    p, n2 = Flex(var=["x"], loc=0., scale=1.), N2(var=["x"], loc=0., scale=1.)
    out = {"normal": p.get_log_prob({"x": x}), "n2_normal": n2.get_log_prob({"x": x})}
    p.heavy = True
    n2.distribution_torch_class = torch.distributions.Laplace
    out["laplace"] = p.get_log_prob({"x": x})
    out["n2_laplace"] = n2.get_log_prob({"x": x})
    return out


def test_distribution_torch_class_is_read_at_each_call_as_pixyz_reads_it() -> None:
    """A property on the instance's state, and an attribute assigned to the instance later (it was read once)."""
    ref, ours = run_both(_torch_class_on_state)
    assert_same(ref, ours)
    x = torch.tensor([0.5])
    torch.testing.assert_close(ours["laplace"], torch.distributions.Laplace(0., 1.).log_prob(x))
    torch.testing.assert_close(ours["n2_laplace"], ours["laplace"])
    torch.testing.assert_close(ours["normal"], torch.distributions.Normal(0., 1.).log_prob(x))


def _late_attributes() -> Any:
    import functools

    import torch

    from pixyz.distributions.distributions import DistributionBase

    class StudentT(DistributionBase):  # a hyperparameter the subclass sets after super().__init__
        params_keys = ["loc", "scale"]
        distribution_name = "StudentT"
        has_reparam = True

        def __init__(self, df: float, **kw: Any) -> None:
            super().__init__(**kw)
            self.df = df

        @property
        def distribution_torch_class(self) -> Any:
            return functools.partial(torch.distributions.StudentT, self.df)

    class Keys(DistributionBase):
        distribution_torch_class = torch.distributions.Normal
        distribution_name = "Keys"

        def __init__(self, keys: list, **kw: Any) -> None:
            super().__init__(**kw)
            self.keys = keys

        @property
        def params_keys(self) -> list:
            return self.keys

        def forward(self) -> dict:
            return {"loc": torch.zeros(1, 1), "scale": torch.full((1, 1), 2.)}

    x = torch.tensor([[0.5], [-3.0]])
    t = StudentT(3.0, var=["x"], loc=0., scale=1.)
    k = Keys(["loc", "scale"], var=["x"])
    return {"t": t.get_log_prob({"x": x}), "keys": k.get_log_prob({"x": x})}


def test_properties_reading_attributes_set_after_init_are_read_at_the_first_call() -> None:
    ref, ours = run_both(_late_attributes)
    assert_same(ref, ours)
    x = torch.tensor([0.5, -3.0])
    torch.testing.assert_close(ours["t"], torch.distributions.StudentT(3.0, 0., 1.).log_prob(x))
    torch.testing.assert_close(ours["keys"], torch.distributions.Normal(0., 2.).log_prob(x))


def _torch_class_without_validate_args() -> Any:
    import torch
    from torch.distributions import Distribution as TD
    from torch.distributions import constraints

    from pixyz.distributions.distributions import DistributionBase

    class ShiftedExp(TD):
        arg_constraints = {"shift": constraints.real}
        support = constraints.real
        has_rsample = True

        def __init__(self, shift: Any) -> None:  # no validate_args, which Pixyz never passes
            self.shift = shift
            super().__init__(batch_shape=shift.shape, validate_args=False)

        def rsample(self, sample_shape: Any = torch.Size()) -> Any:
            u = torch.rand(torch.Size(sample_shape) + self.shift.shape)
            return self.shift - torch.log1p(-u)

        def log_prob(self, x: Any) -> Any:
            return -(x - self.shift)

    class Fam(DistributionBase):
        params_keys = ["shift"]
        distribution_torch_class = ShiftedExp
        distribution_name = "ShiftedExp"
        has_reparam = True

    p = Fam(var=["x"], cond_var=["s"], shift="s")
    s = torch.zeros(2, 3)
    return {"lp": p.get_log_prob({"x": s + 1, "s": s}), "draw": p.sample({"s": s}, reparam=True)["x"]}


def test_a_users_torch_class_without_validate_args_is_called_with_the_parameters_only() -> None:
    ref, ours = run_both(_torch_class_without_validate_args)
    assert_same(ref, ours)
    torch.testing.assert_close(ours["lp"], torch.full((2,), -3.))
    assert bool((ours["draw"] >= 0).all())


def _laplace_set_dist_and_dist_property(kind: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        if kind == "set_dist":
            class Lap(Normal):
                def set_dist(self, x_dict: Any = {}, batch_n: Any = None, **kwargs: Any) -> None:  # noqa: B006
                    super().set_dist(x_dict, batch_n=batch_n, **kwargs)
                    self._dist = torch.distributions.Laplace(self._dist.loc, self._dist.scale)
        else:
            class Lap(Normal):  # type: ignore[no-redef]
                @property
                def dist(self) -> Any:
                    d = self._dist
                    return torch.distributions.Laplace(d.loc, d.scale)

        q = Lap(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.5), features_shape=[2], name="q")
        p = Lap(var=["z"], loc=0., scale=1., features_shape=[2], name="p")
        x = torch.tensor([[0.5, -1.0], [1.0, 2.0]])
        return {"log_prob": q.get_log_prob({"z": x, "x": x}), "kl": KullbackLeibler(q, p).eval({"x": x}),
                "entropy": q.get_entropy({"x": x}), "mean": q.sample_mean({"x": x}),
                "variance": q.sample_variance({"x": x}), "draw": q.sample({"x": x})["z"]}

    return program


@pytest.mark.parametrize("kind", ["set_dist", "dist"])
def test_a_set_dist_or_dist_property_of_the_users_is_what_every_call_reads(kind: str) -> None:
    """Scores, the KL, the entropy and the moments of the Laplace the subclass makes, as Pixyz and the closed forms
    give them (a set_dist of a plain torch object raised at to_event; a dist property was ignored)."""
    ref, ours = run_both(_laplace_set_dist_and_dist_property(kind))
    assert_same(ref, ours)
    x = torch.tensor([[0.5, -1.0], [1.0, 2.0]])
    lap = torch.distributions.Laplace(x, 1.5)
    torch.testing.assert_close(ours["log_prob"], lap.log_prob(x).sum(-1))
    torch.testing.assert_close(ours["entropy"], lap.entropy().sum(-1))
    torch.testing.assert_close(ours["variance"], lap.variance)
    kl = torch.distributions.kl_divergence(lap, torch.distributions.Laplace(torch.zeros(2), 1.)).sum(-1)
    torch.testing.assert_close(ours["kl"], kl)


def test_a_set_dist_of_a_plain_torch_object_scores_its_pyro_site_by_it() -> None:
    from pyro import poutine

    from pyro_dgm.distributions import Normal

    class Lap(Normal):
        def set_dist(self, x_dict: Any = {}, batch_n: Any = None, **kwargs: Any) -> None:  # noqa: B006
            super().set_dist(x_dict, batch_n=batch_n, **kwargs)
            self._dist = torch.distributions.Laplace(self._dist.loc, self._dist.scale)

    q = Lap(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.5), features_shape=[2], name="q")
    x, z = torch.tensor([[0.5, -1.0], [1.0, 2.0]]), torch.zeros(2, 2)
    tr = poutine.trace(q.model).get_trace(x=x, z=z)
    torch.testing.assert_close(tr.log_prob_sum(), torch.distributions.Laplace(x, 1.5).log_prob(z).sum())


def _mixture_of_own_methods() -> Any:
    import torch

    from pixyz.distributions import Categorical, MixtureModel, Normal
    from pixyz.losses import LogProb

    class Tempered(Normal):
        def get_log_prob(self, x_dict: Any, *args: Any, **kw: Any) -> Any:
            return super().get_log_prob(x_dict, *args, **kw) - 1.0

    class Rounded(Normal):
        def sample(self, x_dict: Any = {}, *args: Any, **kw: Any) -> Any:  # noqa: B006
            out = super().sample(x_dict, *args, **kw)
            out["x"] = out["x"].round()
            return out

    comps = [Tempered(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="c0"),
             Tempered(var=["x"], loc=torch.full((2,), 3.), scale=torch.ones(2), name="c1")]
    prior = Categorical(var=["k"], probs=torch.tensor([0.3, 0.7]), name="pk")
    mix = MixtureModel(comps, prior)
    x = torch.tensor([[0., 0.], [3., 3.]])
    rounded = MixtureModel([Rounded(var=["x"], loc=torch.zeros(2), scale=torch.full((2,), 3.), name="c0"),
                            Rounded(var=["x"], loc=torch.full((2,), 10.), scale=torch.full((2,), 3.), name="c1")],
                           Categorical(var=["k"], probs=torch.tensor([0.5, 0.5]), name="pk"))
    return {"lp": mix.get_log_prob({"x": x}), "loss": LogProb(mix).eval({"x": x}),
            "draw": rounded.sample(batch_n=6)["x"]}


def test_a_mixture_scores_and_draws_its_components_by_their_own_methods() -> None:
    ref, ours = run_both(_mixture_of_own_methods)
    assert_same(ref, ours)
    x = torch.tensor([[0., 0.], [3., 3.]])
    n = torch.distributions.Normal
    plain = torch.logsumexp(torch.stack([n(0., 1.).log_prob(x).sum(-1) + torch.tensor(0.3).log(),
                                         n(3., 1.).log_prob(x).sum(-1) + torch.tensor(0.7).log()]), 0)
    torch.testing.assert_close(ours["lp"], plain - 1.0)
    assert torch.equal(ours["draw"], ours["draw"].round())


def _methods_set_on_the_class_later() -> Any:
    import torch
    import torch.nn as nn

    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x: Any) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:])}

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    q = Q()
    p = Normal(loc="z", scale=1., var=["y"], cond_var=["z"], features_shape=[2])
    joint = q * p
    values = {"x": x, "z": torch.zeros(4, 2), "y": torch.zeros(4, 2)}
    out = {"before": joint.get_log_prob(values)}

    def get_log_prob(self: Any, x_dict: Any, sum_features: bool = True, feature_dims: Any = None, **kw: Any) -> Any:
        return Normal.get_log_prob(self, x_dict, sum_features, feature_dims, **kw) - 100.0

    def get_params(self: Any, params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
        params = Normal.get_params(self, params_dict, **kw)
        return {**params, "loc": params["loc"] * 0 + 10.0}

    Q.get_log_prob = get_log_prob
    out["patched_log_prob"] = joint.get_log_prob(values)
    Q.get_params = get_params
    out["patched_params_draw"] = q.sample({"x": x})["z"]
    out["new_instance"] = (Q() * p).get_log_prob(values)
    return out


def test_methods_set_on_a_class_after_it_was_made_are_used_as_pixyz_uses_them() -> None:
    """A later cell's ``Q.get_log_prob = ...`` reaches a product built before it, and ``Q.get_params = ...`` the
    draws (and a new instance), as Pixyz calls the method of the moment."""
    def pixyz_program() -> Any:
        _clear_pixyz_cache()
        return _methods_set_on_the_class_later()

    ref, ours = run_pixyz(pixyz_program), run_pyro_dgm(_methods_set_on_the_class_later)
    assert_same(ref, ours)
    torch.testing.assert_close(ours["patched_log_prob"], ours["before"] - 100.0)
    assert float((ours["patched_params_draw"] - 10.0).abs().mean()) < 3.0


def _prior_made_invalid(how: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="prior")
        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], features_shape=[2], name="q")
        if how == "assigned":
            prior.scale = torch.full((1, 2), -1.)
        elif how == "in place":
            with torch.no_grad():
                prior.scale.fill_(-1.)
        else:
            prior.load_state_dict({"loc": torch.zeros(1, 2), "scale": torch.full((1, 2), -1.)})
        out = {}
        for name, fn in (("log_prob", lambda: prior.get_log_prob({"z": torch.ones(2, 2)})),
                         ("kl", lambda: KullbackLeibler(q, prior).eval({"x": torch.zeros(2, 2)}))):
            try:
                out[name] = fn()
            except ValueError as e:
                out[name] = ("ValueError", "scale" in str(e))
        return out

    return program


@pytest.mark.needs_validation
@pytest.mark.parametrize("how", ["assigned", "in place", "loaded"])
def test_a_constant_made_invalid_after_construction_is_refused_as_pixyz_refuses_it(how: str) -> None:
    """It scored NaN and gave an analytic KL of 0; a new set of buffers is checked as the first was."""
    ref, ours = run_both(_prior_made_invalid(how))
    assert ref == ours == {"log_prob": ("ValueError", True), "kl": ("ValueError", True)}


def test_a_constant_changed_back_to_valid_values_scores_again() -> None:
    from pyro_dgm.distributions import Normal

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="prior")
    z = torch.ones(2, 2)
    with torch.no_grad():
        prior.scale.fill_(2.)
    torch.testing.assert_close(prior.get_log_prob({"z": z}), torch.distributions.Normal(0., 2.).log_prob(z).sum(-1))


def _flow_after_a_hook(change: str) -> Any:
    def program() -> Any:
        import torch
        import torch.nn as nn

        from pixyz.distributions import Normal
        from pixyz.flows import AffineCoupling

        from pixyz.distributions import TransformedDistribution

        class ST(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(4, 8)

            def forward(self, x: Any) -> Any:
                s, t = self.fc(x).chunk(2, dim=-1)
                return torch.tanh(s), t

        torch.manual_seed(3)
        net = ST()
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4])
        flow = AffineCoupling(4, mask_type="channel_wise", scale_translate_net=net)
        p = TransformedDistribution(prior, flow, var=["x"])
        x = p.sample(batch_n=3)["x"]
        if change == "hook":
            net.register_forward_hook(lambda m, i, o: (o[0], o[1] + 1.0))
        else:
            def forward(self: Any, x: Any) -> Any:
                s, t = self.fc(x).chunk(2, dim=-1)
                return torch.tanh(s) * 0.5, t
            ST.forward = forward
        kw = {} if type(p).__module__.startswith("pyro_dgm") else {"compute_jacobian": True}  # (Pixyz's exact score)
        return {"draw": p.get_log_prob({"x": x}, **kw), "copy": p.get_log_prob({"x": x.clone()}, **kw)}

    return program


@pytest.mark.parametrize("change", ["hook", "forward"])
def test_a_flows_memory_of_its_draw_sees_a_hook_or_a_replaced_forward(change: str) -> None:
    """The score of the draw is the score of a copy (no memory), under the changed network, as Pixyz's exact score."""
    ref, ours = run_both(_flow_after_a_hook(change))
    assert_same(ref, ours)
    torch.testing.assert_close(ours["draw"], ours["copy"])


def test_lru_cache_for_sample_dict_sees_a_replaced_forward() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils import lru_cache_for_sample_dict

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x: Any) -> dict:
            return {"loc": self.fc(x), "scale": torch.ones_like(x)}

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006 (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

    q, x = Q(), torch.ones(1, 2)
    first = q.sample_mean({"x": x})
    torch.testing.assert_close(first, q.fc(x))
    Q.forward = lambda self, x: {"loc": torch.full_like(x, -7.), "scale": torch.ones_like(x)}
    torch.testing.assert_close(q.sample_mean({"x": x}), torch.full((1, 2), -7.))
