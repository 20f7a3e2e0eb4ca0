"""Bad inputs raise ValueError/TypeError whose message names the distribution, the variable and what was expected."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import (Bernoulli, CustomProb, Deterministic, EmpiricalDistribution,
                                    MarginalizeVarDistribution, MultiplyDistribution, Normal, ReplaceVarDistribution)


def names(*parts: str) -> str:
    """A ``match=`` pattern requiring every part (literally, in any order) in the message."""
    return "(?s)" + "".join(f"(?=.*{re.escape(p)})" for p in parts)


def message(e: BaseException) -> str:
    return "\n".join([str(e), *getattr(e, "__notes__", [])])


@pytest.fixture
def p():
    return Normal(loc="z", scale=1., var=["x"], cond_var=["z"])


@pytest.fixture
def prior():
    return Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")


class Net(Normal):
    """p(x|z) whose forward returns ``out(z)``."""

    def __init__(self, out):
        super().__init__(var=["x"], cond_var=["z"])
        self.out = out

    def forward(self, z):
        return self.out(z)


Z = {"z": torch.zeros(2, 3)}


# ---------------------------------------------------------------------------------------------- missing inputs
def test_missing_conditioning_variable_at_sample(p):
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "missing input variable 'z'")):
        p.sample({})
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'")):
        p.sample({"w": torch.zeros(1)})
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'")):
        p.sample()


def test_missing_variable_at_get_log_prob(p, prior):
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'", "['x', 'z']")):
        p.get_log_prob({"x": torch.zeros(1)})
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'x'")):
        p.get_log_prob({"z": torch.zeros(1)})
    with pytest.raises(ValueError, match=names("p(x,z)", "'z'")):
        (p * prior).get_log_prob({"x": torch.zeros(1, 2)})


def test_missing_input_of_a_conditional_joint():
    a = Normal(loc="y", scale="a", var=["x"], cond_var=["y", "a"], name="p_{1}")
    b = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="p_{2}")
    with pytest.raises(ValueError, match=names("p_{1}(x,z|y,a)", "'a'", "['y', 'a']")):
        (a * b).sample({"y": torch.zeros(1)})


def test_inputs_of_the_wrong_kind(p):
    two = Normal(loc="y", scale="a", var=["x"], cond_var=["y", "a"])
    with pytest.raises(ValueError, match=names("Normal p(x|y,a)", "['y', 'a']", "dict")):
        two.sample(torch.zeros(1))
    with pytest.raises(ValueError, match=names("Normal p(x|y,a)", "got 1 values", "['y', 'a']")):
        two.sample([torch.zeros(1)])
    with pytest.raises(TypeError, match=names("Normal p(x|z)", "str")):
        p.sample("z")


# ---------------------------------------------------------------------------------------------- construction
# A family that cannot compute is built (Pixyz builds it: it prints and multiplies) and raises at its first call.
def test_forward_argument_names_differ_from_cond_var():
    class Bad(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"])

        def forward(self, h):
            return {"loc": h, "scale": torch.ones_like(h)}

    bad = Bad()
    assert bad.prob_text == "p(x|z)"
    with pytest.raises(ValueError, match=names("Bad p(x|z)", "'h'", "cond_var ['z']")):
        bad.sample({"z": torch.zeros(1, 1)})

    class BadDet(Deterministic):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"])

        def forward(self, w):
            return {"x": w}

    bad_det = BadDet()  # Pixyz builds it and fails at the first call: so do we
    assert bad_det.prob_text == "p(x|z)"
    with pytest.raises(ValueError, match=names("BadDet p(x|z)", "'w'", "cond_var ['z']")):
        bad_det.sample({"z": torch.zeros(1, 1)})

    class Star(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"])

        def forward(self, *args):
            return {}

    with pytest.raises(TypeError, match=names("Star p(x|z)", "*args", "['z']")):
        Star().get_log_prob({"x": torch.zeros(1, 1), "z": torch.zeros(1, 1)})


def test_cond_var_used_by_nothing():
    unused = Normal(loc=0., scale=1., var=["x"], cond_var=["z"])
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'", "forward(z)")):
        unused.sample({"z": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'", "forward(z)")):
        Normal(var=["x"], cond_var=["z"]).get_log_prob({"x": torch.zeros(1, 1), "z": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "loc='w'", "cond_var ['z']")):
        Normal(loc="w", scale=1., var=["x"], cond_var=["z"])


def test_unknown_parameter_name():
    with pytest.raises(TypeError, match=names("Normal p(x)", "'mu'", "loc, scale")):
        Normal(mu=0., scale=1., var=["x"])
    with pytest.raises(TypeError, match=names("Bernoulli p(x)", "'loc'", "probs")):
        Bernoulli(loc=0.5, var=["x"])


def test_parameter_missing_without_forward():
    # Pixyz builds such a distribution (it prints and multiplies) and fails when it is used: so do we
    p = Normal(loc=0., var=["x"])
    assert "p(x,y) = p(y|x)p(x)" in str(p * Normal(var=["y"], cond_var=["x"], loc="x", scale=1.))  # Pixyz's order
    with pytest.raises(ValueError, match=names("Normal p(x)", "scale", "forward()")):
        p.sample()
    with pytest.raises(ValueError, match=names("Normal p(x)", "scale", "forward()")):
        p.get_log_prob({"x": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match=names("Bernoulli p(x)", "probs or logits")):
        Bernoulli(var=["x"]).sample()
    with pytest.raises(ValueError, match=names("Bernoulli p(x)", "probs", "logits", "not")):
        Bernoulli(probs=0.5, logits=0., var=["x"])


def test_parameter_of_the_wrong_type():
    with pytest.raises(TypeError, match=names("Normal p(x)", "loc", "list")):
        Normal(loc=[], scale=1., var=["x"])
    with pytest.raises(TypeError, match=names("Normal p(x)", "loc", "object")):
        Normal(loc=object(), scale=1., var=["x"])


def test_variable_both_in_var_and_cond_var():
    with pytest.raises(ValueError, match=names("Normal p", "'x'", "var ['x']", "cond_var ['x']")):
        Normal(loc="x", scale=1., var=["x"], cond_var=["x"])


def test_var_given_as_a_string():
    # Pixyz iterates a string, so a one-character name works there (var="x", cond_var="y"): the same here
    p = Normal(loc="z", scale=1., var="x", cond_var="z")
    assert (p.var, p.cond_var) == (["x"], ["z"])
    assert EmpiricalDistribution(var="x").var == ["x"]
    # a longer string is one variable per character, as in Pixyz, with a warning that gives the fix
    with pytest.warns(UserWarning, match=names("EmpiricalDistribution p_{data}", "var='xy'", "['x', 'y']",
                                               "var=['xy']")):
        assert EmpiricalDistribution(var="xy").var == ["x", "y"]
    with pytest.warns(UserWarning, match=names("var='x1'")), \
            pytest.raises(ValueError, match=names("Normal p", "one variable", "['x', '1']")):
        Normal(loc=0., scale=1., var="x1")


def test_other_bad_var_lists():
    with pytest.raises(ValueError, match=names("Normal p", "var", "at least one")):
        Normal(loc=0., scale=1., var=[])
    with pytest.raises(ValueError, match=names("Normal p", "['x', 'x']", "twice")):
        Normal(loc=0., scale=1., var=["x", "x"])
    with pytest.raises(TypeError, match=names("Normal p", "var", "3")):
        Normal(loc=0., scale=1., var=[3])
    with pytest.raises(ValueError, match=names("Normal p(x,y)", "one variable", "['x', 'y']")):
        Normal(loc=0., scale=1., var=["x", "y"])
    with pytest.raises(TypeError, match=names("Normal", "name", "3")):
        Normal(loc=0., scale=1., var=["x"], name=3)


def test_constant_shapes_do_not_broadcast_with_features_shape():
    with pytest.raises(ValueError, match=names("Normal p(x)", "loc", "(3,)", "features_shape (2,)")):
        Normal(loc=torch.zeros(3), scale=1., var=["x"], features_shape=[2])
    with pytest.raises(ValueError, match=names("Normal p(x)", "loc: (3,)", "scale: (2,)")):
        Normal(loc=torch.zeros(3), scale=torch.ones(2), var=["x"])


@pytest.mark.needs_validation
def test_invalid_parameter_values(prior):
    with pytest.raises(ValueError, match=names("Normal p(x)", "scale", "GreaterThan")):
        Normal(loc=0., scale=-1., var=["x"]).sample()
    with pytest.raises(ValueError, match=names("Net p(x|z)", "scale", "GreaterThan")):
        Net(lambda z: {"loc": z, "scale": -torch.ones_like(z)}).sample(Z)


# ---------------------------------------------------------------------------------------------- forward's output
def test_forward_returns_an_unknown_key():
    with pytest.raises(ValueError, match=names("Net p(x|z)", "'sd'", "loc, scale")):
        Net(lambda z: {"loc": z, "sd": z}).sample(Z)


def test_forward_misses_a_parameter():
    with pytest.raises(ValueError, match=names("Net p(x|z)", "scale", "['loc']")):
        Net(lambda z: {"loc": z}).sample(Z)
    with pytest.raises(ValueError, match=names("Net p(x|z)", "scale")):
        Net(lambda z: {"loc": z}).get_log_prob({"z": Z["z"], "x": Z["z"]})


def test_forward_returns_no_dict():
    with pytest.raises(TypeError, match=names("Net p(x|z)", "dict", "tuple")):
        Net(lambda z: (z, z)).sample(Z)


class Det(Deterministic):
    def __init__(self, out):
        super().__init__(var=["x"], cond_var=["z"], name="f")
        self.out = out

    def forward(self, z):
        return self.out(z)


def test_deterministic_forward_output():
    with pytest.raises(ValueError, match=names("Det f(x|z)", "['x']", "['y']")):
        Det(lambda z: {"y": z}).sample(Z)
    with pytest.raises(ValueError, match=names("Det f(x|z)", "['x']", "Tensor")):
        Det(lambda z: z).sample(Z)
    no_forward = Deterministic(var=["x"], cond_var=["z"])  # Pixyz: NotImplementedError at the first call
    with pytest.raises(NotImplementedError, match=names("Deterministic p(x|z)", "forward(z)", "'x'")):
        no_forward.sample(Z)


def test_custom_prob_function_arguments():
    # Pixyz builds them and fails at the first call: so do we
    with pytest.raises(TypeError, match=names("CustomProb p(x)", "'x'", "var ['x']")):
        CustomProb(lambda y: -y ** 2, var=["x"]).get_log_prob({"x": torch.zeros(1, 1)})
    with pytest.raises(TypeError, match=names("CustomProb p(x)", "'y'", "var ['x']")):
        CustomProb(lambda x, y: -x ** 2, var=["x"]).get_log_prob({"x": torch.zeros(1, 1)})
    with pytest.raises(TypeError, match=names("CustomProb", "callable", "int")):
        CustomProb(3, var=["x"])
    # keyword-only, defaults and **kwargs are fine
    x = torch.ones(2, 1)
    assert torch.equal(CustomProb(lambda *, x, s=2.: -s * x, var=["x"]).get_log_prob({"x": x}), -2 * x[:, 0])
    assert torch.equal(CustomProb(lambda **kw: kw["x"], var=["x"]).get_log_prob({"x": x}), x[:, 0])


# ---------------------------------------------------------------------------------------------- products
def test_conflicting_factors(p):
    q = Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="q")
    with pytest.raises(ValueError, match=names("'x'", "p(x|z)", "q(x|y)", "replace_var")):
        p * q
    prior = Normal(loc=0., scale=1., var=["z"])
    with pytest.raises(ValueError, match=names("'x'", "p(x|z)", "q(x|y)")):  # inside a joint
        (p * prior) * q


def test_cyclic_factors(p):
    r = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="r")
    with pytest.raises(ValueError, match=names("p(x|z)", "r(z|x)", "cycle", "acyclic")):
        p * r
    # a longer cycle inside nested products names every factor on it
    a = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="a")
    b = Normal(loc=0., scale=1., var=["w"], name="b")
    c = Normal(loc="y", scale=1., var=["z"], cond_var=["y"], name="c")
    d = Normal(loc="x", scale=1., var=["y"], cond_var=["x"], name="d")
    with pytest.raises(ValueError, match=names("a(x|z)", "c(z|y)", "d(y|x)", "cycle")):
        (a * b) * (c * d)


def test_multiplying_by_a_non_distribution(p):
    with pytest.raises(TypeError, match=names("Normal", "int")):
        p * 3
    with pytest.raises(TypeError, match=names("Normal", "float")):
        2.0 * p
    with pytest.raises(TypeError, match=names("MultiplyDistribution", "p(x|z)", "int")):
        MultiplyDistribution(p, 3)
    with pytest.raises(TypeError, match=names("MultiplyDistribution", "p(x|z)", "Linear")):
        MultiplyDistribution(nn.Linear(1, 1), p)


# ---------------------------------------------------------------------------------------------- graph operations
def test_replace_var_unknown_or_bad_name(p, prior):
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'w'", "['x', 'z']")):
        p.replace_var(w="v")
    with pytest.raises(ValueError, match=names("p(x,z)", "'w'")):
        (p * prior).replace_var(w="v")
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'x'", "new name")):
        p.replace_var(z="x")
    with pytest.raises(TypeError, match=names("Normal p(x|z)", "'z'", "string", "3")):
        p.replace_var(z=3)
    # (a joint renamed by the class built directly is the joint's replace_var, as Pixyz's class renames it: p325)
    assert ReplaceVarDistribution(p * prior, {"z": "w"}).prob_text == (p * prior).replace_var(z="w").prob_text
    with pytest.raises(TypeError, match=names("Normal p(x|z)", "dict", "list")):
        ReplaceVarDistribution(p, ["z"])


def test_replace_var_on_a_marginal_cannot_reuse_the_hidden_name(p, prior):
    m = (p * prior).marginalize_var(["z"])
    with pytest.raises(ValueError, match=names("p(x)", "'z'", "marginalized")):
        m.replace_var(x="z")
    with pytest.raises(ValueError, match=names("p(x)", "has no variable 'y'")):
        m.replace_var(y="w")  # (the integrated z may be renamed, as in Pixyz: test_diff_round30.py)


def test_marginalize_var_errors(p, prior):
    joint = p * prior
    with pytest.raises(ValueError, match=names("p(x,z)", "'w'", "['x', 'z']")):
        joint.marginalize_var(["w"])
    with pytest.raises(ValueError, match=names("p(x,z)", "'w'")):
        joint.marginalize_var("w")
    with pytest.raises(ValueError, match=names("p(x,z)", "['x', 'z']", "leaves nothing")):
        joint.marginalize_var(["x", "z"])
    with pytest.raises(ValueError, match=names("p(x,z)", "at least one")):
        joint.marginalize_var([])
    class Two(Deterministic):
        def __init__(self):
            super().__init__(var=["x", "y"], cond_var=["z"], name="f")

        def forward(self, z):
            return {"x": z, "y": z}

    with pytest.raises(TypeError, match=names("Two f(x,y|z)", "single distribution")):
        MarginalizeVarDistribution(Two(), ["y"])
    with pytest.raises(TypeError, match=names("Two f(x,y|z)", "single distribution")):
        Two().marginalize_var("y")
    with pytest.raises(ValueError, match=names("Normal p(x|z)", "'z'", "['x']")):
        p.marginalize_var(["z"])


# ---------------------------------------------------------------------------------------------- shapes
def test_scoring_a_value_with_the_wrong_feature_shape(prior):
    with pytest.raises(ValueError, match=names("Normal p_{prior}(z)", "'z'", "(4, 3)", "feature shape (2,)")):
        prior.get_log_prob({"z": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match=names("Normal p_{prior}(z)", "'z'", "(4,)")):
        prior.get_log_prob({"z": torch.zeros(4)})
    p = Net(lambda z: {"loc": z, "scale": torch.ones_like(z)})
    with pytest.raises(ValueError, match=names("Net p(x|z)", "'x'", "(2, 4)", "feature shape (3,)")):
        p.get_log_prob({"z": Z["z"], "x": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=names("Net p(x|z)", "'x'", "(2, 4)")):  # inside a joint
        (p * prior.replace_var(z="w")).get_log_prob({"z": Z["z"], "x": torch.zeros(2, 4), "w": torch.zeros(2, 2)})


def test_batch_n_conflicts_with_the_parameters_batch_size():
    class Learned(Normal):
        def __init__(self):
            super().__init__(var=["z"], name="p_{prior}")
            self.loc_ = nn.Parameter(torch.zeros(3, 2))

        def forward(self):
            return {"loc": self.loc_, "scale": torch.ones(3, 2)}

    with pytest.raises(ValueError, match=names("Learned p_{prior}(z)", "batch_n=4", "batch size 3")):
        Learned().sample(batch_n=4)
    assert Learned().sample(batch_n=3)["z"].shape == (3, 2)


# ---------------------------------------------------------------------------------------------- batch_n, values, networks

@pytest.mark.parametrize("batch_n", ["3", 2.5])
def test_batch_n_of_the_wrong_type(prior, batch_n):
    with pytest.raises((TypeError, ValueError), match=names("p_{prior}(z)", "batch_n")):
        prior.sample(batch_n=batch_n)


def test_negative_batch_n(prior):
    with pytest.raises(ValueError, match=names("p_{prior}(z)", "batch_n", "-2")):
        prior.sample(batch_n=-2)  # (-1 keeps the inputs' size, as Pixyz's expand does)


@pytest.mark.parametrize("value", ["a", ["a", "b"], {"z": 1.}])
def test_scoring_a_value_that_is_not_a_tensor(prior, value):
    with pytest.raises((TypeError, ValueError), match=names("p_{prior}(z)", "'z'")):
        prior.get_log_prob({"z": value})


def test_a_list_of_numbers_is_scored_as_the_tensor_it_spells(prior):
    torch.testing.assert_close(prior.get_log_prob({"z": [[1., 2.], [0., 3.]]}),
                               prior.get_log_prob({"z": torch.tensor([[1., 2.], [0., 3.]])}))


def test_network_input_of_the_wrong_shape():
    class Dec(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"])
            self.fc = nn.Linear(2, 3)

        def forward(self, z):
            return {"loc": self.fc(z), "scale": torch.ones(1)}

    with pytest.raises((RuntimeError, ValueError)) as info:
        Dec().sample({"z": torch.zeros(4, 5)})
    assert "Dec p(x|z)" in message(info.value) and "'z'" in message(info.value)


@pytest.mark.parametrize("dims", [-1, ["a"], [-1.0], "0"])
@pytest.mark.parametrize("call", ["get_log_prob", "get_entropy"])
def test_feature_dims_of_the_wrong_type_name_the_distribution(dims: object, call: str) -> None:
    # Pixyz raises torch's "sum() received an invalid combination of arguments" or "'int' object has no len()"
    p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"])
    args = ({"x": torch.zeros(2, 3)},) if call == "get_log_prob" else ()
    with pytest.raises(TypeError, match=r"Normal p\(x\): feature_dims must be a list of ints .*, got"):
        getattr(p, call)(*args, feature_dims=dims)
    torch.testing.assert_close(getattr(p, call)(*args, feature_dims=[-1]), getattr(p, call)(*args))


def test_batch_n_of_one_against_a_batch_asks_for_inputs_of_batch_one() -> None:
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"])
    with pytest.raises(ValueError, match=r"batch_n=1 asks for 1 draw, .*; give inputs of batch 1, or leave batch_n"):
        p.sample({"z": torch.zeros(4, 1)}, batch_n=1)
