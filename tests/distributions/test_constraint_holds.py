"""``closed_forms.holds``: the constraint checks of the closed forms' gate, read from a reduction, against torch's
own ``constraint.check`` (the reference: the general path builds the distribution object, which checks by it)."""
from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.distributions import constraints

from pyro_dgm.distributions import closed_forms
from pyro_dgm.distributions import Bernoulli, Normal

CONSTRAINTS = [constraints.real, constraints.positive, constraints.nonnegative, constraints.unit_interval,
               constraints.greater_than(-2.0), constraints.greater_than_eq(1.0), constraints.less_than(0.5),
               constraints.interval(-1.0, 3.0), constraints.half_open_interval(0.0, 1.0)]
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -2.0, 1e-45, -1e-45, 1e38, -1e38, math.inf, -math.inf, math.nan]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@settings(max_examples=400, deadline=None)
@given(c=st.sampled_from(CONSTRAINTS), dtype=st.sampled_from(DTYPES),
       values=st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-4, 4)), min_size=0, max_size=12),
       shape0=st.booleans())
def test_holds_is_the_checks_all(c, dtype, values, shape0):
    """For every elementwise constraint of number bounds, values at and beyond the bounds, infinities and nan (which
    satisfies none), in every float dtype: the reduction's answer is the check's."""
    t = torch.tensor(values[:1] if shape0 and values else values, dtype=dtype)
    if shape0 and values:
        t = t.reshape(())
    expected = bool(torch._is_all_true(c.check(t)))
    assert closed_forms.holds(c, t) is expected


@pytest.mark.parametrize("c", [constraints.boolean, constraints.simplex, constraints.nonnegative_integer,
                               constraints.interval(torch.tensor(0.0), torch.tensor(2.0))])
def test_holds_other_constraints_use_their_check(c):
    """Constraints outside the table (and bounds that are tensors) answer by their own check."""
    for t in (torch.tensor([0.0, 1.0]), torch.tensor([0.3, 0.7]), torch.tensor([2.5, -1.0]), torch.tensor([1, 0])):
        assert closed_forms.holds(c, t) is bool(torch._is_all_true(c.check(t)))


def test_integer_values_use_the_check():
    t = torch.tensor([0, 1, 2])
    assert closed_forms.holds(constraints.unit_interval, t) is False
    assert closed_forms.holds(constraints.nonnegative, t) is True


@pytest.mark.parametrize("bad", [1.5, -0.25, math.nan])
def test_a_decoders_probabilities_out_of_range_are_refused_by_name(bad):
    """Through the gate: a Bernoulli decoder's probabilities outside [0, 1] (or nan) take the general path, whose
    torch validation refuses them, named (as at the start of this change); valid ones score as torch does."""
    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z):
            return {"probs": z}

    z = torch.full((3, 5000), 0.25)
    x = (torch.arange(15000).reshape(3, 5000) % 2).float()
    ref = dist.Bernoulli(probs=z).log_prob(x).sum(-1)
    assert torch.allclose(P().get_log_prob({"z": z, "x": x}), ref, rtol=1e-6)
    z[1, 7] = bad
    with pytest.raises(ValueError, match="probs"):
        P().get_log_prob({"z": z, "x": x})


@pytest.mark.needs_validation
def test_a_nan_location_and_a_scale_of_zero_are_refused():
    """A network's location of nan breaks ``real``; a constant scale set to 0 in place breaks ``positive``."""
    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x):
            return {"loc": x, "scale": x.abs() + 1}

    x = torch.randn(4, 3)
    assert torch.allclose(Q().get_log_prob({"x": x, "z": x}), dist.Normal(x, x.abs() + 1).log_prob(x).sum(-1))
    y = x.clone()
    y[2, 1] = math.nan
    with pytest.raises(ValueError, match="loc"):
        Q().get_log_prob({"x": y, "z": x})
    p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"])
    with torch.no_grad():
        p.scale[..., 1] = 0.0
    with pytest.raises(ValueError, match="scale"):
        p.get_log_prob({"z": x})


class _DirectScale(Normal):
    """A network's location and a parameter returned as it is for the scale (the same tensor at every call)."""

    def __init__(self):
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.s = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return {"loc": x, "scale": self.s}


@pytest.mark.needs_validation
@pytest.mark.parametrize("how", ["in place", "data", "vector_to_parameters", "data in place", "numpy",
                                 "aliased data"])
def test_a_parameter_returned_as_is_is_checked_again_after_a_change(how):
    """A tensor the gate checked is checked again at the next call, however it was changed since (probe p278: a
    shortcut that skipped tensors checked last, unchanged by their version and storage, let ``.data`` and numpy
    changes through, silently NaN): torch's validation refuses a scale of -1 as at the first call."""
    q = _DirectScale()
    x = torch.randn(4, 3)
    want = dist.Normal(x, torch.ones(3)).log_prob(x).sum(-1)
    assert torch.allclose(q.get_log_prob({"x": x, "z": x}), want)
    assert torch.allclose(q.get_log_prob({"x": x, "z": x}), want)
    with torch.no_grad():
        if how == "in place":
            q.s.fill_(-1.0)
        elif how == "data":
            q.s.data = -torch.ones(3)
        elif how == "vector_to_parameters":
            torch.nn.utils.vector_to_parameters(-torch.ones(3), [q.s])
        elif how == "data in place":
            q.s.data.mul_(-1)
        elif how == "numpy":
            q.s.detach().numpy()[:] = -1
        else:
            a = torch.ones(3)
            q.s.data = a
            q.get_log_prob({"x": x, "z": x})
            a.fill_(-1)
    with pytest.raises(ValueError, match="scale"):
        q.get_log_prob({"x": x, "z": x})


def test_a_distribution_checked_by_the_gate_pickles_and_copies():
    """A distribution scored through the gate pickles and copies, and scores alike."""
    import copy
    import pickle

    q = _DirectScale()
    x = torch.randn(4, 3)
    lp = q.get_log_prob({"x": x, "z": x})
    for twin in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
        assert torch.allclose(twin.get_log_prob({"x": x, "z": x}), lp)


@pytest.mark.parametrize("c", [constraints.greater_than(0.1), constraints.greater_than_eq(0.1),
                               constraints.interval(0.1, 0.7), constraints.less_than(1e-8)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_that_the_dtype_does_not_hold_exactly_answer_as_the_check(c, dtype):
    """Probe p276: a bound such as 0.1 is rounded to the value's dtype by the check; a number read from the value and
    compared with the bound as a double disagreed at the rounded bound (float32 0.1 > 0.1: the check says False)."""
    for b in (0.1, 0.7, 1e-8):
        for t in (torch.tensor([b], dtype=dtype), torch.tensor([b], dtype=dtype).nextafter(torch.tensor(2.0, dtype=dtype))
                  if dtype in (torch.float32, torch.float64) else torch.tensor([b * 1.01], dtype=dtype)):
            assert closed_forms.holds(c, t) is bool(torch._is_all_true(c.check(t)))


@pytest.mark.needs_validation
def test_vmap_over_the_scored_value_under_validation():
    """Probe p276: ``torch.func.vmap`` over the value a Normal of constant parameters scores, and a per-example
    score (``vmap(grad(...))``), under validation: torch.distributions' numbers (the check read a number, which vmap
    cannot); a nan value is refused by name, as torch refuses it."""
    from torch.func import grad, vmap

    p = Normal(loc="m", scale="s", var=["x"], cond_var=["m", "s"])
    m, s = torch.randn(3), torch.rand(3) + 0.5
    xs = torch.randn(4, 3)
    got = vmap(lambda xv: p.get_log_prob({"x": xv[None], "m": m[None], "s": s[None]})[0])(xs)
    assert torch.allclose(got, dist.Normal(m, s).log_prob(xs).sum(-1))
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"])
    score = vmap(grad(lambda x: prior.get_log_prob({"x": x[None]}).sum()))(xs)
    assert torch.allclose(score, -xs)
    bad = xs.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="'x'"):
        vmap(lambda xv: p.get_log_prob({"x": xv[None], "m": m[None], "s": s[None]})[0])(bad)
