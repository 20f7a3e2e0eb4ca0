"""Thirty-eighth round: methods set on one distribution (``q.get_log_prob = fn``, a later notebook cell), under
Pixyz and here (:mod:`pixyz_harness`), against closed forms and plain-Pyro twins.

Pixyz's graph calls ``q.get_log_prob(...)`` and ``q.sample(...)`` and its ``set_dist`` calls ``q.get_params(...)``,
which find a function set on the instance before the class's method. Here such a function was used by ``q``'s own
public call only: a product, a loss term, a mixture, a KL, and Pyro runs kept the class's method (the product's
log-density without the user's shift, a KL from the network's parameters instead of the user's).
"""
from __future__ import annotations

import copy
import pickle
from typing import Any

import pyro
import pytest
import torch
from pyro import poutine

from pixyz_harness import assert_same, run_both


def _shifted_log_prob_program(where: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import MixtureModel, Categorical, Normal
        from pixyz.losses import Expectation, LogProb

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = torch.nn.Linear(2, 2)

            def forward(self, x: Any) -> Any:
                return {"loc": self.lin(x), "scale": torch.ones_like(x)}

        q = Q()
        x, z = torch.randn(3, 2), torch.randn(3, 2)
        orig = q.get_log_prob
        q.get_log_prob = lambda x_dict, **kw: orig(x_dict, **kw) - 1.
        prior = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="px")
        if where == "public":
            return q.get_log_prob({"x": x, "z": z})
        if where == "logprob":
            return LogProb(q).eval({"x": x, "z": z})
        if where == "product":
            return (q * prior).get_log_prob({"x": x, "z": z})
        if where == "expectation":
            p = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
            return Expectation(p, LogProb(q)).eval({"x": x})
        if where == "replace_var":
            return q.replace_var(z="w").get_log_prob({"x": x, "w": z})
        a = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="a")
        a2 = Normal(var=["y"], loc=torch.ones(2), scale=torch.ones(2), name="b")
        orig_a = a.get_log_prob
        a.get_log_prob = lambda x_dict, **kw: orig_a(x_dict, **kw) - 3.
        mix = MixtureModel([a, a2], Categorical(var=["k"], probs=torch.tensor([0.5, 0.5]), name="pk"))
        return mix.get_log_prob({"y": z})

    return program


@pytest.mark.parametrize("where", ["public", "logprob", "product", "expectation", "replace_var", "mixture"])
def test_a_get_log_prob_set_on_the_instance_is_what_pixyz_calls(where: str) -> None:
    ref, ours = run_both(_shifted_log_prob_program(where))
    assert_same(ref, ours)


def _params_program() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    q = Q()
    x, z = torch.randn(3, 2), torch.randn(3, 2)
    q.get_params = lambda params_dict, **kw: {"loc": torch.zeros(3, 2), "scale": torch.full((3, 2), 2.)}
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    draw = q.sample({"x": x}, batch_n=3)["z"]
    return {"lp": q.get_log_prob({"x": x, "z": z}), "kl": KullbackLeibler(q, prior).eval({"x": x}),
            "draw_shape": tuple(draw.shape), "mean": q.sample_mean({"x": x}), "var": q.sample_variance({"x": x})}


def test_get_params_set_on_the_instance_gives_the_parameters_everywhere() -> None:
    ref, ours = run_both(_params_program)
    assert_same(ref, ours)
    n = torch.distributions.Normal(torch.zeros(2), torch.full((2,), 2.))
    kl = torch.distributions.kl_divergence(n, torch.distributions.Normal(0., 1.)).sum()
    torch.testing.assert_close(ours["kl"], kl.expand(3))
    torch.testing.assert_close(ours["var"], torch.full((3, 2), 4.))


def _sample_program() -> Any:
    import torch

    from pixyz.distributions import Normal

    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    orig = p.sample

    def clamped(x_dict: Any = {}, *args: Any, **kw: Any) -> Any:  # noqa: B006
        out = orig(x_dict, *args, **kw)
        out["x"] = out["x"].clamp(-0.1, 0.1)
        return out

    p.sample = clamped
    joint = p * prior
    s = joint.sample(batch_n=200)
    own = p.sample({"z": torch.zeros(5, 2)})
    del p.sample
    after = joint.sample(batch_n=200)
    return {"joint_max": s["x"].abs().max() <= 0.1, "own_max": own["x"].abs().max() <= 0.1,
            "after_max": after["x"].abs().max() > 0.1, "keys": sorted(s)}


def test_a_sample_set_on_the_instance_draws_in_a_product_until_it_is_deleted() -> None:
    ref, ours = run_both(_sample_program)
    assert_same(ref, ours)
    assert ours["joint_max"] and ours["own_max"] and ours["after_max"]


def test_the_instance_and_class_methods_stack_as_pixyz_calls_them() -> None:
    """The class's own ``get_log_prob`` (−10) under the instance's (−1): both shifts, in a product too; deleting
    the instance's leaves the class's."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            def get_log_prob(self, x_dict: Any, *args: Any, **kw: Any) -> Any:
                return super().get_log_prob(x_dict, *args, **kw) - 10.

        c = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="c")
        other = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        orig = c.get_log_prob
        c.get_log_prob = lambda x_dict, **kw: orig(x_dict, **kw) - 1.
        v = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
        out = [c.get_log_prob(v), (c * other).get_log_prob(v)]
        del c.get_log_prob
        return out + [c.get_log_prob(v), (c * other).get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    base = torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum()
    torch.testing.assert_close(ours[0], (base - 11.).reshape(1))
    torch.testing.assert_close(ours[2], (base - 10.).reshape(1))


def _instance_shift(shift: float) -> Any:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    orig = p.get_log_prob

    def glp(x_dict: Any, **kw: Any) -> Any:
        return orig(x_dict, **kw) - shift

    p.get_log_prob = glp
    return p


def test_a_pyro_site_of_a_get_log_prob_set_on_the_instance_is_scored_by_it() -> None:
    """``p.model``'s site ``x`` is scored by the instance's method: the plain-Pyro twin's log-density with a
    ``pyro.factor`` of −2 per row."""
    from pyro_dgm.distributions import Normal

    p = _instance_shift(2.)
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    x = torch.randn(4, 2)
    pyro.set_rng_seed(0)
    tr = poutine.trace((p * prior).model).get_trace(x=x)
    z = tr.nodes["z"]["value"]

    def twin() -> None:
        with pyro.plate("data", 4):
            zz = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(zz, 1.).to_event(1), obs=x)
            pyro.factor("shift", torch.full((4,), -2.))

    ref = poutine.trace(poutine.condition(twin, data={"z": z})).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), ref.log_prob_sum())


def test_copies_and_pickles_keep_the_instance_method_and_a_fresh_instance_does_not() -> None:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    p.get_log_prob = _PickledShift(p)
    x = {"x": torch.zeros(1, 2)}
    base = torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum().reshape(1)
    other = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    xy = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
    for q in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        torch.testing.assert_close((q * other).get_log_prob(xy), 2 * base - 5.)
        assert q.get_log_prob.owner is q
    torch.testing.assert_close(Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2)).get_log_prob(x), base)


class _PickledShift:
    """A picklable instance method: the class's log-density of its owner minus 5."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def __call__(self, x_dict: Any, **kw: Any) -> Any:
        return type(self.owner).get_log_prob(self.owner, x_dict, **kw) - 5.


def test_a_control_without_instance_methods_keeps_the_class_hooks() -> None:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    p.note = "a plain attribute"
    assert not any(k in vars(p) for k in ("_dgm_score_with", "_dgm_draw_with", "_dgm_params"))


def _set_dist_program() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import Entropy

    o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    orig = p.get_sample
    p.get_sample = lambda reparam=False, sample_shape=torch.Size(): {
        k: v + 100. for k, v in orig(reparam, sample_shape).items()}
    q = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="q")
    orig_set = q.set_dist

    def set_dist(x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
        orig_set(x_dict, batch_n, **kw)
        q._dist = torch.distributions.Laplace(q._dist.loc, q._dist.scale)

    q.set_dist = set_dist
    v = {"x": torch.ones(1, 2), "y": torch.ones(1, 2)}
    return {"own_draw": p.sample(batch_n=2)["x"].min() > 50, "joint_draw": (p * o).sample(batch_n=2)["x"].min() > 50,
            "lp": q.get_log_prob(v), "joint_lp": (q * o).get_log_prob(v), "entropy": Entropy(q).eval()}


def test_set_dist_and_get_sample_set_on_the_instance_draw_and_score_as_pixyz() -> None:
    ref, ours = run_both(_set_dist_program)
    assert_same(ref, ours)
    laplace = torch.distributions.Laplace(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(ours["lp"], laplace.log_prob(torch.ones(2)).sum().reshape(1))
    torch.testing.assert_close(ours["entropy"], laplace.entropy().sum().reshape(1))


def test_a_class_method_set_after_the_instance_method_joins_it() -> None:
    """The instance's ``get_sample`` (+100) routed first; then a later cell sets the class's ``sample`` (×−1): a
    product draws through both, as Pixyz calls them (−100 and below)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            pass

        p = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        orig = p.get_sample
        p.get_sample = lambda reparam=False, sample_shape=torch.Size(): {
            k: v + 100. for k, v in orig(reparam, sample_shape).items()}
        before = (p * o).sample(batch_n=3)["x"]

        def sample(self: Any, *args: Any, **kw: Any) -> Any:
            return {k: -v for k, v in Normal.sample(self, *args, **kw).items()}

        C.sample = sample
        return {"before": before.min() > 50, "after": (p * o).sample(batch_n=3)["x"].max() < -50}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours["before"] and ours["after"]


def test_get_params_set_in_init_before_the_base_init_and_late_params_keys() -> None:
    """A subclass setting ``self.get_params`` before ``super().__init__``, and one whose ``params_keys`` reads an
    attribute set after it (read at the first call) with a ``get_params`` set on the instance before that call:
    both give the instance's parameters, as in Pixyz (closed form: N(1, 2²))."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        def fixed(params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
            return {"loc": torch.ones(1, 2), "scale": torch.full((1, 2), 2.)}

        class Early(Normal):
            def __init__(self) -> None:
                self.get_params = fixed
                super().__init__(var=["x"], name="e")

        class Late(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="l")
                self.keys = ["loc", "scale"]

            @property
            def params_keys(self) -> Any:
                return self.keys

        late = Late()
        late.get_params = fixed
        v = {"x": torch.zeros(1, 2)}
        return [Early().get_log_prob(v), late.get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    expected = torch.distributions.Normal(1., 2.).log_prob(torch.zeros(2)).sum().reshape(1)
    torch.testing.assert_close(ours[0], expected)
    torch.testing.assert_close(ours[1], expected)
