"""Pixyz programs that pass arguments by position (or rely on Pixyz's defaults) give Pixyz's numbers here.

Each program builds distributions and losses the way Pixyz's signatures allow (``Normal(var, cond_var, name,
features_shape, loc, scale)``, ``RelaxedBernoulli(..., temperature, probs)``, ``Multinomial(total_count, ...)``,
``ValueLoss(loss1)``, ``IterativeLoss(step_loss, max_iter, series_var, update_value)``...) and is run under Pixyz
0.3.3 and under pyro_dgm from the same seed (:mod:`pixyz_harness`); samples and log-densities must agree to float32
rounding (rtol 1e-5: the same formulas on the same draws).
"""
from __future__ import annotations

import pytest
from pixyz_harness import assert_same, raises_same, run_both


def _positional_location_scale():
    import torch
    from pixyz.distributions import Gamma, Laplace, Normal

    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    n = Normal(["x"], [], "p", torch.Size([3]), torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 2.0, 0.5]))
    lap = Laplace(["x"], [], "p", torch.Size([3]), torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 2.0, 0.5]))
    g = Gamma(["x"], [], "p", torch.Size([3]), torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 0.5, 2.0]))
    pos = x.abs() + 0.1
    return {"normal_lp": n.get_log_prob({"x": x}), "normal_sample": n.sample(batch_n=4)["x"],
            "laplace_lp": lap.get_log_prob({"x": x}), "laplace_sample": lap.sample(batch_n=4)["x"],
            "gamma_lp": g.get_log_prob({"x": pos}), "text": n.prob_text, "shape": n.features_shape}


def _positional_conditional():
    import torch
    from pixyz.distributions import Normal

    p = Normal(["x"], ["y"], "q", torch.Size([2]), "y", torch.tensor(2.0))
    y = torch.tensor([[1.0, -1.0], [0.0, 3.0]])
    return {"text": p.prob_text, "sample": p.sample({"y": y})["x"],
            "lp": p.get_log_prob({"x": torch.zeros(2, 2), "y": y})}


def _positional_discrete():
    import torch
    from pixyz.distributions import Bernoulli, Categorical, FactorizedBernoulli, Multinomial

    probs = torch.tensor([0.2, 0.7, 0.5])
    b = Bernoulli(["x"], [], "p", torch.Size([3]), probs)
    fb = FactorizedBernoulli(["x"], [], "p", torch.Size([3]), probs)
    c = Categorical(["y"], [], "p", torch.Size([3]), torch.tensor([0.1, 0.6, 0.3]))
    m = Multinomial(1, ["n"], [], "p", torch.Size([3]), torch.tensor([0.1, 0.6, 0.3]))
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    return {"bern_lp": b.get_log_prob({"x": x}), "bern_sample": b.sample(batch_n=3)["x"],
            "fbern_lp": fb.get_log_prob({"x": x}), "cat_lp": c.get_log_prob({"y": torch.eye(3)}),
            "multinomial_lp": m.get_log_prob({"n": torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}),
            "total_count": m.total_count}


def _positional_simplex():
    import torch
    from pixyz.distributions import Beta, Dirichlet

    d = Dirichlet(["x"], [], "p", torch.Size([3]), torch.tensor([1.0, 2.0, 3.0]))
    be = Beta(["x"], [], "p", torch.Size([2]), torch.tensor([2.0, 0.5]), torch.tensor([1.0, 3.0]))
    return {"dirichlet_lp": d.get_log_prob({"x": torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])}),
            "beta_lp": be.get_log_prob({"x": torch.tensor([[0.25, 0.5], [0.9, 0.1]])}),
            "dirichlet_sample": d.sample(batch_n=2)["x"], "beta_sample": be.sample(batch_n=2)["x"]}


def _positional_relaxed():
    import torch
    from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical

    rb = RelaxedBernoulli(["x"], [], "p", torch.Size([2]), torch.tensor(0.5), torch.tensor([0.3, 0.8]))
    rc = RelaxedCategorical(["y"], [], "p", torch.Size([3]), torch.tensor(0.5), torch.tensor([0.2, 0.5, 0.3]))
    xb = rb.sample(batch_n=4)["x"]
    yc = rc.sample(batch_n=4)["y"]
    return {"rb_sample": xb, "rb_lp": rb.get_log_prob({"x": xb}), "rc_sample": yc}


def _pixyz_defaults():
    import torch
    from pixyz.distributions import Normal, RelaxedBernoulli

    n = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0))  # default var ['x'], name 'p', cond_var []
    rb = RelaxedBernoulli(probs=torch.tensor([0.4]))  # default temperature 0.1
    return {"text": n.prob_text, "var": n.var, "cond_var": n.cond_var, "name": n.name,
            "lp": n.get_log_prob({"x": torch.tensor([[0.5]])}), "rb_sample": rb.sample(batch_n=3)["x"],
            "rb_text": rb.prob_text}


def _distribution_atomic_positional():
    import torch
    from pixyz.distributions import Distribution

    class Const(Distribution):
        def __init__(self):
            super().__init__(["x"], ["y"], "f", torch.Size([2]), True)

    c = Const()
    return {"text": c.prob_text, "var": c.var, "cond_var": c.cond_var, "shape": c.features_shape}


def _losses_positional():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss, ValueLoss
    from pixyz.losses.mmd import pairwise_distance_matrix

    q = Normal(["h"], ["h_prev"], "q", torch.Size([1]), "h_prev", torch.tensor(1.0))
    p = Normal(["x"], ["h"], "p", torch.Size([1]), "h", torch.tensor(1.0))
    step = p.log_prob().expectation(q)
    it = IterativeLoss(step, 3, ["x"], {"h": "h_prev"})
    x = torch.tensor([[[0.5]], [[1.0]], [[-0.5]]])
    return {"value": ValueLoss(2.5).eval(), "value_text": str(ValueLoss(loss1=3)),
            "iter": it.eval({"x": x, "h_prev": torch.zeros(1, 1)}), "iter_input": sorted(it.input_var),
            "dist": pairwise_distance_matrix(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0], [2.0, 3.0]]),
                                             "euclidean")}


def _unparameterized_builds():
    import torch
    from pixyz.distributions import Normal

    p = Normal(var=["x"], name="p")
    q = Normal(var=["y"], cond_var=["x"], loc="x", scale=torch.tensor(1.0))
    joint = q * p
    return {"str": str(p), "joint": str(joint), "text": joint.prob_joint_factorized_and_text,
            "var": joint.var}


def _unusable_builds():
    import torch
    from pixyz.distributions import Normal

    class Mismatch(Normal):  # forward's argument is not the cond_var
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y"], name="m")

        def forward(self, z):
            return {"loc": z, "scale": torch.ones_like(z)}

    built = [Normal(var=["x"], cond_var=["y"], loc=torch.tensor(0.0), scale=torch.tensor(1.0)),  # y reaches nothing
             Normal(var=["x"], cond_var=["y"]),  # no parameters
             Normal(var=["x"], loc=torch.tensor(0.0), scale=torch.tensor(-1.0)),  # an invalid constant
             Mismatch()]
    prior = Normal(var=["y"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), name="p_{y}")
    return [(d.prob_text, (d * prior).prob_joint_factorized_and_text) for d in built]


PROGRAMS = [_unusable_builds, _positional_location_scale, _positional_conditional, _positional_discrete, _positional_simplex,
            _positional_relaxed, _pixyz_defaults, _distribution_atomic_positional, _losses_positional,
            _unparameterized_builds]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__.strip("_"))
def test_same_as_pixyz(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_unusable_fails_when_used():
    """Pixyz builds ``Normal(var=["x"])`` (and a cond_var that reaches nothing, an invalid constant) and fails at the
    first draw or score: so do we (ValueError in both)."""
    def sample():
        from pixyz.distributions import Normal
        Normal(var=["x"], name="p").sample(batch_n=2)

    def score():
        import torch
        from pixyz.distributions import Normal
        Normal(var=["x"], loc=torch.tensor(0.0)).get_log_prob({"x": torch.zeros(2, 1)})

    def unused_cond_var():
        import torch
        from pixyz.distributions import Normal
        Normal(var=["x"], cond_var=["y"], loc=torch.tensor(0.0), scale=torch.tensor(1.0)).sample(
            {"y": torch.zeros(2, 1)})

    assert raises_same(sample) == (ValueError, ValueError)
    assert raises_same(score)[1] is ValueError
    assert raises_same(unused_cond_var) == (ValueError, ValueError)


@pytest.mark.needs_validation
def test_invalid_constant_fails_when_used():
    """An invalid constant (scale -1) is found by torch's argument validation at the first draw, in both."""
    def invalid_constant():
        import torch
        from pixyz.distributions import Normal
        Normal(var=["x"], loc=torch.tensor(0.0), scale=torch.tensor(-1.0)).sample()

    assert raises_same(invalid_constant) == (ValueError, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# Where Pixyz 0.3.3 is wrong: we keep the correct value; each test shows both and the reason.

def test_multinomial_total_count_is_used():
    """Pixyz stores ``total_count`` but never passes it to ``torch.distributions.Multinomial`` (which then counts one
    draw): its samples sum to 1 and counts that sum to ``total_count`` are outside the support (ValueError). We draw
    and score ``total_count`` trials, as ``torch.distributions.Multinomial(total_count, probs)`` does."""
    import torch

    def program():
        import torch
        from pixyz.distributions import Multinomial
        m = Multinomial(4, ["n"], [], "p", torch.Size([3]), torch.tensor([0.1, 0.6, 0.3]))
        return m.sample(batch_n=5)["n"].sum(-1)

    ref, ours = run_both(program)
    assert ref.tolist() == [1.0] * 5  # Pixyz: one trial, whatever total_count says
    assert ours.tolist() == [4.0] * 5

    def score():
        import torch
        from pixyz.distributions import Multinomial
        m = Multinomial(4, ["n"], [], "p", torch.Size([3]), torch.tensor([0.1, 0.6, 0.3]))
        return m.get_log_prob({"n": torch.tensor([[1.0, 2.0, 1.0]])})

    from pixyz_harness import run_pixyz, run_pyro_dgm
    torch_m = torch.distributions.Multinomial(4, torch.tensor([0.1, 0.6, 0.3]))
    expected = torch_m.log_prob(torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(run_pyro_dgm(score), expected.reshape(1))
    if torch.distributions.Distribution._validate_args:
        with pytest.raises(ValueError):  # Pixyz: [1, 2, 1] is not a count of one trial
            run_pixyz(score)


def test_relaxed_categorical_scores_the_categorical():
    """Pixyz scores a RelaxedCategorical value with ``BernoulliTorchOld(probs)`` (the code of RelaxedBernoulli): the
    one-hot vector as independent Bernoulli coordinates, which is not a log-density of a categorical. We score it
    under the categorical of its arg-max (as Pixyz's Categorical does with one-hot values): log p_k."""
    import torch

    def program():
        import torch
        from pixyz.distributions import RelaxedCategorical
        rc = RelaxedCategorical(["y"], [], "p", torch.Size([3]), torch.tensor(0.5), torch.tensor([0.2, 0.5, 0.3]))
        return rc.get_log_prob({"y": torch.eye(3)})

    ref, ours = run_both(program)
    probs = torch.tensor([0.2, 0.5, 0.3])
    bce = (torch.eye(3) * probs.log() + (1 - torch.eye(3)) * (1 - probs).log()).sum(-1)
    torch.testing.assert_close(ref, bce)  # Pixyz: sum_j log Bernoulli(e_k[j]; p_j)
    torch.testing.assert_close(ours, probs.log())  # ours: log p_k


def _pixyz_protocol_family():
    import torch
    from pixyz.distributions.distributions import DistributionBase

    class StudentT(DistributionBase):  # a family added the way Pixyz documents it
        def __init__(self, var=["x"], cond_var=[], name="p", features_shape=torch.Size(), df=None, loc=None,
                     scale=None):
            super().__init__(var, cond_var, name, features_shape, df=df, loc=loc, scale=scale)

        @property
        def params_keys(self):
            return ["df", "loc", "scale"]

        @property
        def distribution_torch_class(self):
            return torch.distributions.StudentT

        @property
        def distribution_name(self):
            return "StudentT"

        @property
        def has_reparam(self):
            return True

    t = StudentT(["x"], [], "t", torch.Size([2]), torch.tensor(3.0), torch.tensor([0.0, 1.0]), torch.tensor(2.0))
    c = StudentT(["y"], ["x"], "q", torch.Size([2]), torch.tensor(4.0), "x", torch.tensor(1.0))
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    joint = c * t
    return {"text": str(t), "lp": t.get_log_prob({"x": x}), "cond_lp": c.get_log_prob({"x": x, "y": x + 1}),
            "sample": t.sample(batch_n=3)["x"], "joint": joint.prob_joint_factorized_and_text,
            "joint_lp": joint.get_log_prob({"x": x, "y": x - 1})}


def _bare_distribution_base():
    import torch
    from pixyz.distributions.distributions import DistributionBase

    d = DistributionBase(var=["x"], cond_var=["y"], name="d", loc=torch.tensor([0.0, 1.0]))
    return {"text": str(d), "prob": d.prob_text, "buffers": sorted(n for n, _ in d.named_buffers())}


@pytest.mark.parametrize("program", [_pixyz_protocol_family, _bare_distribution_base],
                         ids=lambda f: f.__name__.strip("_"))
def test_pixyz_style_families(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)
