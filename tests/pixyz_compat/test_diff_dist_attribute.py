"""``p.dist`` and ``p.get_sample()`` after a call, as in Pixyz: the last ``set_dist`` or call wins.

Pixyz's ``sample``, ``get_log_prob``, ``sample_mean``, ``sample_variance``, ``get_entropy`` and analytic KL go
through ``set_dist``, so afterwards ``p.dist`` is the torch distribution of that call (a relaxed family's relaxed one
after ``sample``, its hard one after the others) and ``get_sample()`` draws from it; in a product each factor's is
set. Before, ``p.dist`` here stayed our builder (``'function' object has no attribute 'loc'``), ``get_sample()``
asked for ``set_dist``, and after an explicit ``set_dist`` it kept that object through later calls (silently
stale). A call records only the parameters it computed (or the object it built); the torch object is built when
read (``family.pixyz_dist``).
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from pixyz_harness import assert_same, renamed_import, run_both, run_pixyz, run_pyro_dgm, same


# ---------------------------------------------------------------------------------------------- the probe's programs
def prog_dist_after_sample() -> Any:
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[3])
    p.sample(batch_n=2)
    return type(p.dist).__name__, p.dist.loc.shape, p.dist.scale


def prog_dist_after_log_prob_conditional() -> Any:
    import torch
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.))
    q.get_log_prob({"x": torch.ones(4, 2), "z": torch.zeros(4, 2)})
    return q.dist.loc, q.dist.scale, q.dist.batch_shape


def prog_get_sample_after_sample() -> Any:
    import torch
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.))
    q.sample({"x": torch.ones(4, 2)})
    return q.get_sample()["z"], q.get_sample(sample_shape=[3])["z"]


def prog_dist_after_sample_mean() -> Any:
    import torch
    from pixyz.distributions import Bernoulli
    b = Bernoulli(var=["x"], probs=torch.tensor([0.2, 0.9]))
    b.sample_mean()
    return b.dist.probs


def prog_dist_after_set_dist_then_sample() -> Any:
    import torch
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.))
    q.set_dist({"x": torch.zeros(1, 2)})
    q.sample({"x": torch.full((3, 2), 5.)})
    after_call = q.dist.loc
    q.set_dist({"x": torch.zeros(1, 2)})  # and an explicit set_dist after a call wins again
    return after_call, q.dist.loc


@pytest.mark.parametrize("program", [prog_dist_after_sample, prog_dist_after_log_prob_conditional,
                                     prog_get_sample_after_sample, prog_dist_after_sample_mean,
                                     prog_dist_after_set_dist_then_sample])
def test_the_probes_programs(program: Any) -> None:
    same(program)


# ---------------------------------------------------------------------------------------------- products, moments
def _network_q(lib: Any) -> Any:
    from torch import nn

    class Q(lib.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:])}

    return Q()


def prog_factors_of_a_joint_after_sample() -> Any:
    import torch
    from pixyz.distributions import Normal
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p_z")
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(0.5), name="p")
    s = (p * prior).sample(batch_n=3)
    return (s["z"], prior.dist.loc, prior.dist.scale, p.dist.loc, p.dist.scale, prior.get_sample()["z"],
            p.get_sample(sample_shape=[2])["x"])


def prog_factors_after_get_log_prob() -> Any:
    import torch
    from pixyz.distributions import Bernoulli, Normal
    import pixyz.distributions as lib
    q = _network_q(lib)
    p = Bernoulli(var=["y"], cond_var=["z"], probs="z")
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2))
    x, z, y = torch.randn(4, 3), torch.rand(4, 2), torch.bernoulli(torch.full((4, 2), .5))
    out = {"joint": (p * prior).get_log_prob({"z": z, "y": y}), "p": p.dist.probs, "prior": prior.dist.loc,
           "q": q.get_log_prob({"x": x, "z": z})}
    out["q_params"] = (q.dist.loc, q.dist.scale, type(q.dist).__name__)
    return out


def prog_moments_and_entropy() -> Any:
    import torch
    from pixyz.distributions import Gamma, Laplace
    g = Gamma(var=["x"], cond_var=["c"], concentration="c", rate=torch.tensor(2.))
    c = torch.tensor([[1.], [3.]])
    out = {"mean": (g.sample_mean({"c": c}), g.dist.concentration)}
    out["variance"] = (g.sample_variance({"c": 2 * c}), g.dist.concentration)
    out["entropy"] = (g.get_entropy({"c": 3 * c}), g.dist.concentration, g.get_sample()["x"].shape)
    lap = Laplace(var=["x"], loc=torch.zeros(3), scale=torch.ones(3))
    lap.sample(batch_n=4, sample_shape=[2])  # the dist is expanded for batch_n, not for sample_shape
    out["laplace"] = (lap.dist.batch_shape, lap.get_sample()["x"])
    return out


def prog_analytic_kl_sets_both() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler
    import pixyz.distributions as lib
    q = _network_q(lib)
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2))
    x = torch.randn(5, 3)
    kl = KullbackLeibler(q, prior).eval({"x": x})
    return kl, q.dist.loc, q.dist.scale, prior.dist.loc, prior.dist.batch_shape


@pytest.mark.parametrize("program", [prog_factors_of_a_joint_after_sample, prog_factors_after_get_log_prob,
                                     prog_moments_and_entropy, prog_analytic_kl_sets_both])
def test_products_moments_and_kl_set_each_dist(program: Any) -> None:
    same(program)


# ---------------------------------------------------------------------------------------------- relaxed families
def prog_relaxed_families() -> Any:
    import torch
    from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical
    rb = RelaxedBernoulli(var=["x"], temperature=torch.tensor(0.5), probs=torch.tensor([0.2, 0.7]))
    rc = RelaxedCategorical(var=["y"], temperature=torch.tensor(0.5), probs=torch.tensor([0.2, 0.3, 0.5]))
    out = {}
    for name, d in (("bernoulli", rb), ("categorical", rc)):
        s = d.sample(batch_n=3)[d.var[0]]
        relaxed = (isinstance(d.dist, torch.distributions.RelaxedBernoulli)
                   or isinstance(d.dist, torch.distributions.RelaxedOneHotCategorical))
        out[name + " sample"] = (relaxed, d.dist.batch_shape[:1], d.dist.temperature, d.get_sample()[d.var[0]])
        d.get_log_prob({d.var[0]: s})  # the hard distribution it scores under
        relaxed = (isinstance(d.dist, torch.distributions.RelaxedBernoulli)
                   or isinstance(d.dist, torch.distributions.RelaxedOneHotCategorical))
        out[name + " log_prob"] = (relaxed, d.dist.probs)
    return out


def test_relaxed_families_set_the_relaxed_dist_when_sampling_and_the_hard_one_otherwise() -> None:
    # (Pixyz's hard RelaxedCategorical is per-class Bernoullis, ours the categorical: the same probs here)
    same(prog_relaxed_families)


# ---------------------------------------------------------------------------------------------- values of the call
def prog_dist_keeps_the_calls_parameters_after_a_step() -> Any:
    import torch
    import pixyz.distributions as lib
    q = _network_q(lib)
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    x = torch.randn(4, 3)
    z = q.sample({"x": x}, reparam=True)["z"]
    opt.zero_grad()
    z.pow(2).sum().backward()
    opt.step()
    return q.dist.loc, q.dist.scale, q.get_params({"x": x})["loc"]


def test_dist_holds_the_parameters_of_the_call_not_of_the_weights_after_a_step() -> None:
    ref, ours = run_both(prog_dist_keeps_the_calls_parameters_after_a_step)
    assert_same(ref[:2], ours[:2])
    # the weights moved: recomputing would give other numbers (Pixyz's get_params there is its stale cache's)
    assert not torch.allclose(ours[0], ours[2])


def prog_a_users_set_dist_that_assigns_dist() -> Any:
    import torch
    from pixyz.distributions import Normal

    class Doubled(Normal):  # Pixyz-style: assigns the attribute behind dist
        def set_dist(self, x_dict={}, batch_n=None, **kwargs):  # noqa: B006
            params = self.get_params(x_dict, **kwargs)
            self._dist = torch.distributions.Normal(2 * params["loc"], params["scale"])

    p = Doubled(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.))
    prior = Normal(var=["z"], loc=torch.ones(2), scale=torch.ones(2))
    s = (p * prior).sample(batch_n=3)
    lp = p.get_log_prob(s)
    return s["x"], lp, p.dist.loc, 2 * s["z"]


def test_a_users_set_dist_keeps_working() -> None:
    ref, ours = same(prog_a_users_set_dist_that_assigns_dist)
    torch.testing.assert_close(ours[2], ours[3])


def test_before_any_call_dist_is_our_builder_and_get_sample_raises() -> None:
    """Pixyz's ``dist`` is ``None`` there (``get_sample`` raises an AttributeError of None); ours is the builder,
    and ``get_sample`` raises a ValueError that says to call ``set_dist``."""
    with renamed_import():
        from pixyz.distributions import Normal
        p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2))
        assert p._dist is None and callable(p.dist)
        with pytest.raises(ValueError, match="call set_dist"):
            p.get_sample()


def test_the_builder_call_still_works_after_a_call() -> None:
    from pyro_dgm.distributions import Normal

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.))
    q.sample({"x": torch.ones(4, 2)})
    assert isinstance(q.dist, torch.distributions.Normal) and q.dist.batch_shape == (4, 2)
    built = q.dist({"x": torch.zeros(3, 2)})  # our builder: feature dims as event dims
    assert built.batch_shape == (3,) and built.event_shape == (2,)
    torch.testing.assert_close(q.dist.loc, torch.zeros(3, 2))  # a call of the builder sets dist too


def test_a_distribution_copies_after_a_call() -> None:
    """Pixyz's ``copy.deepcopy`` of a distribution with a network raises after a call (its dist holds the graph);
    ours copies it, and the copy's ``dist`` is that of a distribution not yet called (an explicit ``set_dist``'s
    object is copied, as before)."""
    from pyro_dgm.distributions import Normal

    with renamed_import():
        import pixyz.distributions as lib
        q = _network_q(lib)
    q.sample({"x": torch.randn(4, 3)}, reparam=True)
    assert q.dist.loc.requires_grad
    twin = copy.deepcopy(q)
    assert callable(twin.dist) and twin._dist is None
    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2))
    p.set_dist(batch_n=3)
    assert copy.deepcopy(p).dist.batch_shape == (3, 2)


def prog_a_call_in_a_compiled_like_loop() -> Any:
    """Several calls in a row: each one's parameters, the last wins (the record is replaced, never accumulated)."""
    import torch
    from pixyz.distributions import Normal
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.))
    out = []
    for k in range(3):
        q.sample({"x": torch.full((k + 1, 2), float(k))})
        q.get_log_prob({"x": torch.full((2, 2), 10. + k), "z": torch.zeros(2, 2)})
        out.append(q.dist.loc)
    return out


def test_the_last_call_wins() -> None:
    same(prog_a_call_in_a_compiled_like_loop)


def test_run_both_is_deterministic_for_get_sample() -> None:
    """The same seed gives the same draws from the dist a call set (values, not only shapes)."""
    ref, ours = run_both(prog_get_sample_after_sample)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


# ---------------------------------------------------------------------------------------------- products of experts
def _poe_program(expert_scale: float, dtype: str = "float32", loc_scale: float = 1.0) -> Any:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, ProductOfNormal

        class Expert(Normal):
            def __init__(self, c: str, s: float) -> None:
                super().__init__(var=["z"], cond_var=[c], name="q_" + c)
                self.s = s

            def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
                v = next(iter(inputs.values()))
                return {"loc": v, "scale": torch.ones_like(v) * self.s}

        d = getattr(torch, dtype)
        poe = ProductOfNormal([Expert("a", expert_scale), Expert("b", 1.0)])
        a, b = torch.tensor([[1., 2.]], dtype=d) * loc_scale, torch.tensor([[3., 4.]], dtype=d)
        return poe.sample_mean({"a": a, "b": b}), poe.sample_variance({"a": a, "b": b})
    return program


def _poe_closed_form(expert_scale: float, loc_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The product N(0, 1) N(a, s^2) N(b, 1) in float64."""
    a, b = torch.tensor([[1., 2.]], dtype=torch.float64) * loc_scale, torch.tensor([[3., 4.]], dtype=torch.float64)
    prec = 1.0 / expert_scale ** 2
    den = 1.0 + prec + 1.0
    return (prec * a + b) / den, torch.full_like(a, 1.0 / den)


def test_an_expert_of_scale_zero_is_missing_as_in_pixyz() -> None:
    """Pixyz marks a missing expert by a variance of exactly 0: the product of the prior and the other expert."""
    ref, ours = same(_poe_program(0.0))
    assert_same(ours[0], torch.tensor([[1.5, 2.0]]))


@pytest.mark.parametrize("expert_scale", [1e-30, 1e-20, 1e-10])
@pytest.mark.parametrize("loc_scale", [1.0, 100.0])
def test_an_expert_of_tiny_scale_is_kept_pixyz_drops_it(expert_scale: float, loc_scale: float) -> None:
    """In float32 the square of a scale of 1e-30 underflows to 0, which Pixyz takes for a missing expert: its product
    ignores the most certain expert (mean [1.5, 2] where the exact product is [1, 2]); at 1e-20 (a subnormal variance)
    Pixyz's precision overflows (NaN). Ours tests the scale, not its square, and combines the precisions relative to
    the largest: the float64 closed form to float32's precision (the variance as close to ~1e-60 as float32 keeps:
    below its smallest normal number)."""
    mean, var = run_pyro_dgm(_poe_program(expert_scale, loc_scale=loc_scale))
    exact_mean, exact_var = _poe_closed_form(expert_scale, loc_scale)
    torch.testing.assert_close(mean.double(), exact_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.double(), exact_var, rtol=1e-6, atol=torch.finfo(torch.float32).tiny)
    if expert_scale == 1e-30 and loc_scale == 1.0:  # Pixyz drops the expert
        assert_same(run_pixyz(_poe_program(expert_scale))[0], torch.tensor([[1.5, 2.0]]))


def test_a_tiny_scale_in_float64_is_pixyzs_product() -> None:
    same(_poe_program(1e-30, "float64"))


def test_a_renamed_distribution_forwards_the_dist_its_last_call_set_as_pixyz() -> None:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal

        p = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"])
        r = p.replace_var(x="y")
        r.sample({"y": torch.full((3, 2), 4.0)})
        return r.dist.loc, p.dist.loc

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0].shape == (3, 2) and bool((ours[0] == 4.0).all())
