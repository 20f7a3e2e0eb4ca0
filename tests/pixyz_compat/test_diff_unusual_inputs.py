"""Unusual and wrong inputs to the Distribution API, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

A fuzz of bad inputs found Pixyz programs that ran under Pixyz and failed here, values computed silently where
Pixyz raises, and errors that named nothing or that a Pixyz program's ``except`` no longer caught:

- valid programs we refused: a ``Deterministic`` whose output is not a tensor (an LSTM cell's ``(h, c)``); a
  ``MixtureModel`` whose components have features ``()`` and ``(1,)`` (or a constant of features ``()`` beside
  ``(3,)``); a Python number or list scored under a ``Gamma`` or a ``Bernoulli``;
- silent values: ``sample(..., batch_n=5)`` with inputs of batch 3 drew 3 values (Pixyz: "Batch shape mismatch");
  a ``RelaxedCategorical`` scored a NaN value as a class (Pixyz: NaN);
- errors: parameters whose shapes do not broadcast, experts of a product of different shapes, a bad
  ``sample_shape``, ``marginalize_var(3)``; a missing network input is also the ``TypeError`` Pixyz's
  ``forward()`` raises, inputs that are not a dict also Pixyz's ``ValueError``.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from pixyz_harness import assert_same, raises_same, renamed_import, run_both, run_pixyz, run_pyro_dgm, same


# ---------------------------------------------------------------------------------------------- valid programs
def prog_lstm_state_through_a_deterministic() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import LogProb

    class Cell(Deterministic):
        def __init__(self):
            super().__init__(var=["s"], cond_var=["x"], name="f")
            self.cell = nn.LSTMCell(2, 3)

        def forward(self, x):
            return {"s": self.cell(x)}  # (h, c)

    class Emit(Normal):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["s"], name="p")

        def forward(self, s):
            h, c = s
            return {"loc": h, "scale": torch.nn.functional.softplus(c) + 0.1}

    class Const(Deterministic):
        def __init__(self):
            super().__init__(var=["k"], cond_var=["x"], name="g")

        def forward(self, x):
            return {"k": 1.0}

    joint = Emit() * Cell()
    x = torch.randn(4, 2)
    drawn = joint.sample({"x": x})
    return {"y": drawn["y"], "h": drawn["s"][0], "number": Const().sample({"x": x})["k"],
            "loss": LogProb(Emit()).eval({"s": drawn["s"], "y": drawn["y"]})}


def prog_mixtures_of_scalar_and_vector_components() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel, Normal

    def prior():
        return Categorical(probs=torch.tensor([.3, .7]), var=["k"], name="p_{prior}")

    one = MixtureModel(distributions=[Normal(loc=0.5, scale=1., var=["x"], name="p_0"),
                                      Normal(loc=torch.ones(1), scale=2 * torch.ones(1), var=["x"], name="p_1")],
                       prior=prior())
    conditional = MixtureModel(distributions=[Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="p_0"),
                                              Normal(loc=0., scale=1., var=["x"], name="p_1")], prior=prior())
    three = MixtureModel(distributions=[Normal(loc=0., scale=1., var=["x"], name="p_0"),
                                        Normal(loc=torch.ones(3), scale=torch.ones(3), var=["x"], name="p_1")],
                         prior=prior())
    x1, x3 = torch.randn(4, 1), torch.randn(4, 3)
    return {"one": one.get_log_prob({"x": x1}),
            "conditional": conditional.get_log_prob({"x": x1, "y": torch.randn(4, 1)}),
            "three": three.get_log_prob({"x": x3}), "three drawn": three.sample(batch_n=2)["x"].shape}


def prog_numbers_and_lists_from_networks() -> Any:
    import torch
    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z):
            return {"loc": z, "scale": 2.0}

    return P().get_log_prob({"z": torch.zeros(3, 2), "x": torch.ones(3, 2)})


def prog_the_networks_of_special_factors_in_print() -> Any:
    import torch
    import pixyz.distributions as pd
    from pixyz.flows import PlanarFlow

    comps = [pd.Normal(loc=torch.zeros(2) + i, scale=torch.ones(2), var=["y"], name=f"p_{i}") for i in range(2)]
    mix = pd.MixtureModel(distributions=comps, prior=pd.Categorical(probs=torch.ones(2) / 2, var=["k"], name="pk"))
    x = pd.Normal(var=["x"], loc=torch.zeros(1), scale=torch.ones(1))
    flow = pd.TransformedDistribution(pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), PlanarFlow(2),
                                      var=["w"], name="q")
    poe = pd.ProductOfNormal([pd.Normal(loc="a", scale=1.0, var=["z"], cond_var=["a"], name="q_a"),
                              pd.Normal(loc="b", scale=2.0, var=["z"], cond_var=["b"], name="q_b")], name="q")
    return {"products": [str(x * mix), str(x * flow), str(x * poe)],
            "renamed": [str(mix.replace_var(y="v")), str(poe.replace_var(z="v")), str(flow.replace_var(w="v")),
                        str(x.replace_var(x="v"))]}


@pytest.mark.parametrize("program", [prog_lstm_state_through_a_deterministic,
                                     prog_mixtures_of_scalar_and_vector_components,
                                     prog_numbers_and_lists_from_networks,
                                     prog_the_networks_of_special_factors_in_print], ids=lambda f: f.__name__[5:])
def test_same_as_pixyz(program: Callable[[], Any]) -> None:
    assert_same(*run_both(program))


def test_a_mixture_of_a_scalar_and_a_vector_component_is_the_formula() -> None:
    """(Pixyz scores such a mixture but cannot draw from it: its components' draws do not stack.)"""
    _, ours = run_both(prog_mixtures_of_scalar_and_vector_components)
    torch.manual_seed(0)  # the inputs the program drew first, from the harness's seed
    x1 = torch.randn(4, 1)
    normal = torch.distributions.Normal
    expected = torch.logsumexp(torch.stack([normal(0.5, 1.).log_prob(x1).sum(-1) + torch.tensor(.3).log(),
                                            normal(1., 2.).log_prob(x1).sum(-1) + torch.tensor(.7).log()]), 0)
    torch.testing.assert_close(ours["one"], expected)


# ------------------------------------------------------------------------------------- silent values, now errors
def prog_batch_n_against_given_inputs() -> Any:
    import torch
    from pixyz.distributions import Normal
    return Normal(loc="z", scale=1., var=["x"], cond_var=["z"]).sample({"z": torch.zeros(3, 2)}, batch_n=5)


def test_batch_n_against_inputs_of_another_batch_raises_as_pixyz() -> None:
    pixyz_error, ours = raises_same(prog_batch_n_against_given_inputs)
    assert issubclass(ours, pixyz_error)
    with renamed_import(), pytest.raises(ValueError, match=r"p\(x\|z\): batch_n=5 .* \('z': \(3, 2\)\)"):
        prog_batch_n_against_given_inputs()
    # inputs of batch 1 are expanded to batch_n, and batch_n equal to the inputs' batch changes nothing (as Pixyz)
    from pyro_dgm.distributions import Normal
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    assert p.sample({"z": torch.zeros(1, 2)}, batch_n=5)["x"].shape == (5, 2)
    assert p.sample({"z": torch.zeros(3, 2)}, batch_n=3)["x"].shape == (3, 2)


def prog_relaxed_categorical_of_nan() -> Any:
    import torch
    from pixyz.distributions import RelaxedCategorical
    p = RelaxedCategorical(probs=torch.tensor([.2, .3, .5]), temperature=torch.tensor(.5), var=["x"])
    return p.get_log_prob({"x": torch.tensor([[float("nan"), .3, .5], [.1, .1, .8]])})


def test_a_relaxed_categorical_scores_nan_as_nan() -> None:
    """(The finite row is the documented difference: the categorical's log-probability of the arg-max here.)"""
    ref, ours = run_both(prog_relaxed_categorical_of_nan)
    assert torch.isnan(ref[0]) and torch.isnan(ours[0])
    torch.testing.assert_close(ours[1], torch.tensor(0.5).log())


# ---------------------------------------------------------------------------------------------- clear errors
def prog_parameters_that_do_not_broadcast() -> Any:
    import torch
    from pixyz.distributions import Normal
    p = Normal(loc="a", scale="b", var=["x"], cond_var=["a", "b"])
    return p.get_log_prob({"a": torch.zeros(3, 2), "b": torch.ones(2, 2), "x": torch.zeros(3, 2)})


def prog_experts_of_different_shapes() -> Any:
    import torch
    from pixyz.distributions import Normal, ProductOfNormal
    poe = ProductOfNormal([Normal(loc="x", scale=1., var=["z"], cond_var=["x"]),
                           Normal(loc="y", scale=1., var=["z"], cond_var=["y"])])
    return poe.sample({"x": torch.zeros(3, 2), "y": torch.zeros(3, 3)})


def prog_sample_shape_negative() -> Any:
    import torch
    from pixyz.distributions import Normal
    return Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]).sample(sample_shape=[-1])


def prog_sample_shape_of_floats() -> Any:
    import torch
    from pixyz.distributions import Normal
    return Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]).sample(sample_shape=[2.5])


def prog_marginalize_a_number() -> Any:
    import torch
    from pixyz.distributions import Normal
    joint = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=torch.zeros(1), scale=1., var=["z"])
    return joint.marginalize_var(3)


def prog_missing_network_input() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z):
            return {"loc": self.fc(z), "scale": torch.ones(1)}
    return P().get_log_prob({"x": torch.zeros(2, 3)})


def prog_inputs_given_as_a_string() -> Any:
    from pixyz.distributions import Normal
    return Normal(loc="z", scale=1., var=["x"], cond_var=["z"]).sample("z")


@pytest.mark.parametrize("program, pattern", [
    (prog_parameters_that_do_not_broadcast, r"p\(x\|a,b\): the shapes of the parameters .*loc \(3, 2\), scale "),
    (prog_experts_of_different_shapes, r"p\(z\|x,y\): the experts' parameters .*\(3, 2\), \(3, 3\)"),
    (prog_sample_shape_negative, r"p\(x\): sample_shape .*\[-1\]"),
    (prog_sample_shape_of_floats, r"p\(x\): sample_shape .*\[2.5\]"),
    (prog_marginalize_a_number, r"p\(x,z\)\.marginalize_var: .*got 3"),
    (prog_missing_network_input, r"p\(x\|z\): missing input variable 'z'"),
    (prog_inputs_given_as_a_string, r"p\(x\|z\): inputs must be a dict"),
], ids=lambda p: p.__name__[5:] if callable(p) else "")
def test_errors_name_the_distribution_and_are_pixyzs_type(program: Callable[[], Any], pattern: str) -> None:
    pixyz_error, ours = raises_same(program)
    assert issubclass(ours, pixyz_error), f"Pixyz raises {pixyz_error.__name__}, ours {ours.__name__}"
    assert issubclass(ours, (ValueError, TypeError))
    with renamed_import(), pytest.raises(ours, match=pattern):
        program()


def test_a_failing_deterministic_network_is_named() -> None:
    from torch import nn
    from pyro_dgm.distributions import Deterministic

    class F(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="f")
            self.fc = nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.fc(z)}

    with pytest.raises(RuntimeError) as info:  # torch's (and Pixyz's) error type, also a ValueError naming it
        F().sample({"z": torch.zeros(3, 5)})
    assert isinstance(info.value, ValueError)
    assert "F f(x|z): forward() failed on the inputs 'z': (3, 5)" in str(info.value)


# ---------------------------------------------------------------------------------- where we run and Pixyz does not
def prog_swapped_names_of_a_joint() -> Any:
    import torch
    from pixyz.distributions import Normal
    joint = Normal(loc="z", scale=2., var=["x"], cond_var=["z"]) * Normal(loc=torch.ones(1), scale=1., var=["z"])
    swapped = joint.replace_var(x="z", z="x")
    x, z = torch.randn(4, 1), torch.randn(4, 1)
    return swapped.prob_text, swapped.get_log_prob({"z": x, "x": z}), joint.get_log_prob({"x": x, "z": z})


def test_swapping_two_names_of_a_joint_renames_them_pixyz_raises() -> None:
    with pytest.raises(Exception, match="overlapping"):  # networkx's NetworkXUnfeasible
        run_pixyz(prog_swapped_names_of_a_joint)
    text, swapped, original = run_pyro_dgm(prog_swapped_names_of_a_joint)
    assert text == "p(z,x)"
    torch.testing.assert_close(swapped, original)


def prog_relaxed_categorical_of_a_float64_value() -> Any:
    import torch
    from pixyz.distributions import RelaxedCategorical
    p = RelaxedCategorical(probs=torch.tensor([.2, .3, .5]), temperature=torch.tensor(.5), var=["x"])
    return p.get_log_prob({"x": torch.tensor([[.1, .1, .8]], dtype=torch.float64)})


def test_a_relaxed_categorical_scores_a_float64_value_in_float64() -> None:
    """(The value itself is the documented difference: the categorical's log-probability of the arg-max here.)"""
    ref, ours = run_both(prog_relaxed_categorical_of_a_float64_value)
    assert ref.dtype == ours.dtype == torch.float64
    torch.testing.assert_close(ours, torch.tensor([0.5], dtype=torch.float64).log())


def prog_a_flow_scoring_nan() -> Any:
    import math
    import torch
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    return TransformedDistribution(prior, PlanarFlow(2), var=["x"]).get_log_prob({"x": torch.full((3, 2), math.nan)})


@pytest.mark.needs_validation
def test_a_flow_distribution_names_itself_when_it_cannot_score() -> None:
    """Pixyz raises a bare ``Exception`` ("Cannot calculate x ..."); ours named torch's internal class."""
    with pytest.raises(Exception):
        run_pixyz(prog_a_flow_scoring_nan)
    with renamed_import(), pytest.raises(ValueError, match=r"TransformedDistribution p\(x\): cannot score 'x' of "
                                                           r"shape \(3, 2\)"):
        prog_a_flow_scoring_nan()


# ------------------------------------------------------------------------------------- dtypes Pixyz cannot take
def _linear_p(z_dtype: torch.dtype) -> Callable[[], Any]:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal

        class P(Normal):
            def __init__(self):
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = torch.nn.Linear(2, 3)

            def forward(self, z):
                return {"loc": self.fc(z), "scale": torch.ones(3)}

        return P().get_log_prob({"x": torch.zeros(4, 3), "z": torch.zeros(4, 2).to(z_dtype)})
    return program


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.bool])
def test_an_input_of_another_dtype_than_the_weights_names_the_variable_and_the_dtype(dtype: torch.dtype) -> None:
    """Pixyz gives torch's "mat1 and mat2 must have the same dtype"; ours is also that RuntimeError (a Pixyz
    ``except`` still catches it), and a TypeError that names the distribution, the variable and both dtypes."""
    program = _linear_p(dtype)
    with pytest.raises(RuntimeError, match="same dtype"):
        run_pixyz(program)
    with renamed_import(), pytest.raises(RuntimeError) as info:
        program()
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert f"P p(x|z): forward() cannot take 'z' of dtype {dtype}" in message
    assert "torch.float32" in message and "z.to(torch.float32)" in message


def test_an_input_of_the_weights_dtype_gives_pixyzs_value() -> None:
    """The same program with float32 inputs runs under both (the dtype check adds nothing on the valid path)."""
    same(_linear_p(torch.float32))


def prog_a_bool_value_under_a_conditional_normal() -> Any:
    import torch
    from pixyz.distributions import Normal
    p = Normal(loc="mu", scale=torch.ones(3), var=["x"], cond_var=["mu"], name="p")
    return p.get_log_prob({"x": torch.zeros(4, 3, dtype=torch.bool), "mu": torch.zeros(4, 3)})


def test_a_bool_value_is_a_dtype_error_not_a_shape_error() -> None:
    """Pixyz: torch's "Subtraction ... with a bool tensor is not supported". Ours named the shapes, which fit."""
    with pytest.raises(RuntimeError, match="bool"):
        run_pixyz(prog_a_bool_value_under_a_conditional_normal)
    with renamed_import(), pytest.raises(RuntimeError) as info:
        prog_a_bool_value_under_a_conditional_normal()
    assert isinstance(info.value, TypeError)
    assert "Normal p(x|\\mu): cannot score 'x' of dtype torch.bool" in str(info.value)
    assert "x.float()" in str(info.value) and "shape" not in str(info.value).split("(Subtraction")[0]


def prog_an_encoder_that_averages_the_batch_away() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import Expectation, LogProb

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return {"loc": self.fc(x).mean(0), "scale": torch.ones(2)}

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, z):
            return {"loc": self.fc(z), "scale": torch.ones(3)}

    q, p = Q(), P()
    x = torch.randn(4, 3)
    return {"log_q": q.get_log_prob({"x": x, "z": torch.zeros(2)}),
            "reconstruction": Expectation(q, LogProb(p)).eval({"x": x})}


def test_an_encoder_that_averages_the_batch_away_is_named_as_a_cause() -> None:
    """Pixyz scores such a z as a batch of 2 scalars under q (a log-density per feature, not one for the batch),
    so its numbers are not one model's; ours refuses, and the message names the drawing distribution's
    ``forward()`` and ``keepdim=True`` as well as the missing batch dim (porting.md)."""
    ref = run_pixyz(prog_an_encoder_that_averages_the_batch_away)
    assert ref["log_q"].shape == (2,)  # one value per feature of z: Pixyz read z's features as a batch
    with renamed_import(), pytest.raises(ValueError) as info:
        prog_an_encoder_that_averages_the_batch_away()
    message = str(info.value)
    assert "'z' of shape (2,) is a batch of 2 scalars" in message
    assert "drawn by another distribution" in message and "keepdim=True" in message
