"""Bad and unusual inputs, fifth round of the fuzz, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- a value computed silently: a Bernoulli whose network returns both ``probs`` and ``logits`` was scored with
  ``probs`` on the closed-form path (every other path, and Pixyz, refuse them);
- programs we refused: a ``MixtureModel`` scoring an empty batch; ``Multinomial(total_count=...)`` given a numpy or
  torch integer or an integral float (and ``total_count=0``, whose draw raised torch's raw error); a numpy view of
  negative strides (``a[::-1]``) as a value, a network input or a constant;
- errors that named the wrong thing, or nothing: ``probs`` outside [0, 1] under torch's validation off (blamed on
  the value's shape; drawing raised torch's raw error); constructors given a number or one distribution where a
  list of distributions is expected, or a string as weights; a numpy array of strings; ``batch_n`` draws from a
  categorical family whose class parameter is a scalar (Pixyz: ``IndexError: tuple index out of range``).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyro
import pytest
import torch

from pixyz_harness import assert_same, raises_same, renamed_import, run_both, run_pixyz, run_pyro_dgm, same


def _outcome(f: Callable[[], Any]) -> Any:
    """What a call gives: its value, or the names of the built-in exception types its error is an instance of."""
    try:
        return f()
    except Exception as e:  # noqa: BLE001 (the type is what is compared)
        return sorted(t.__name__ for t in (ValueError, TypeError, RuntimeError, AttributeError, IndexError)
                      if isinstance(e, t))


# ------------------------------------------------------------------------- probs and logits, both returned
def prog_probs_and_logits_from_a_network() -> Any:
    import torch
    from pixyz.distributions import Bernoulli, Categorical, FactorizedBernoulli
    from pixyz.losses import LogProb

    def net(cls: Any) -> Any:
        class Net(cls):
            def __init__(self):
                super().__init__(var=["x"], cond_var=["z"], name="p")

            def forward(self, z):  # they disagree: sigmoid(3) is 0.95, not 0.5
                return {"probs": torch.full_like(z, 0.5), "logits": z + 3}
        return Net()

    z, x, onehot = torch.zeros(2, 2), torch.ones(2, 2), torch.eye(2)
    out = {}
    for cls, value in ((Bernoulli, x), (FactorizedBernoulli, x), (Categorical, onehot)):
        p = net(cls)
        for k, f in [("get_log_prob", lambda: p.get_log_prob({"z": z, "x": value})),
                     ("LogProb.eval", lambda: LogProb(p).eval({"z": z, "x": value})),
                     ("sample", lambda: p.sample({"z": z})["x"]),
                     ("get_entropy", lambda: p.get_entropy({"z": z}))]:
            out[f"{cls.__name__} {k}"] = _outcome(f)
    return out


def test_probs_and_logits_from_a_network_are_refused_on_every_path_as_pixyz() -> None:
    """The closed-form log-density (get_log_prob, LogProb) silently used ``probs``; it refuses them now, as the
    other paths and Pixyz do (a ValueError)."""
    ref, ours = same(prog_probs_and_logits_from_a_network)
    assert all(v == ["ValueError"] for v in ref.values()), ref
    from pyro_dgm.distributions import Bernoulli

    class Net(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z):
            return {"probs": torch.full_like(z, 0.5), "logits": z + 3}

    with pytest.raises(ValueError, match=r"Net p\(x\|z\): invalid parameters \(probs: .*not both"):
        Net().get_log_prob({"z": torch.zeros(2, 2), "x": torch.ones(2, 2)})


def prog_get_params_with_an_unknown_parameter() -> Any:
    import torch
    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="q")

        def get_params(self, params_dict={}, **kwargs):  # noqa: B006 (Pixyz's signature)
            z = params_dict["z"]
            return {"loc": z, "scale": torch.ones_like(z), "foo": z}

    q, z = Q(), torch.zeros(2, 2)
    return {"get_log_prob": _outcome(lambda: q.get_log_prob({"z": z, "x": torch.ones(2, 2)})),
            "rsample": _outcome(lambda: q.sample({"z": z}, reparam=True)["x"])}


def test_get_params_with_an_unknown_parameter_is_refused_as_pixyz() -> None:
    """(The closed forms scored and drew from such parameters, ignoring the unknown one.)"""
    ref, _ = same(prog_get_params_with_an_unknown_parameter)
    assert ref["get_log_prob"] == ["ValueError"]
    from pyro_dgm.distributions import Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="q")

        def get_params(self, params_dict={}, **kwargs):  # noqa: B006 (Pixyz's signature)
            return {"loc": params_dict["z"], "scale": torch.ones(1), "foo": params_dict["z"]}

    with pytest.raises(ValueError, match=r"Q q\(x\|z\): get_params\(\) returned unknown parameter 'foo'; Normal "
                                         r"takes loc, scale"):
        Q().get_log_prob({"z": torch.zeros(2, 2), "x": torch.ones(2, 2)})


# --------------------------------------------------------------------------------- a mixture, empty batch
def prog_mixture_of_an_empty_batch() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel, Normal
    from pixyz.losses import LogProb

    def prior():
        return Categorical(probs=torch.tensor([0.3, 0.7]), var=["k"], name="p_k")

    comps = [Normal(loc=torch.zeros(2) + i, scale=torch.ones(2), var=["x"], name=f"p_{i}") for i in range(2)]
    mix = MixtureModel(distributions=comps, prior=prior())
    scalar = MixtureModel(distributions=[Normal(loc=0., scale=1., var=["x"]), Normal(loc=1., scale=1., var=["x"])],
                          prior=prior())
    cond = MixtureModel(distributions=[Normal(loc="y", scale=1., var=["x"], cond_var=["y"]),
                                       Normal(loc=0., scale=1., var=["x"])], prior=prior())
    x0 = torch.zeros(0, 2)
    return {"get_log_prob": mix.get_log_prob({"x": x0}),
            "return_hidden": mix.get_log_prob({"x": x0}, return_hidden=True),
            "LogProb.eval": LogProb(mix).eval({"x": x0}),
            "LogProb.sum.eval": LogProb(mix).sum().eval({"x": x0}),
            "posterior.get_log_prob": mix.posterior().get_log_prob({"x": x0}),
            "posterior.prob.eval": mix.posterior().prob().eval({"x": x0}),
            "scalar components": scalar.get_log_prob({"x": torch.zeros(0, 1)}),
            "conditional": cond.get_log_prob({"x": torch.zeros(0, 1), "y": torch.zeros(0, 1)})}


def test_a_mixture_scores_an_empty_batch_as_pixyz() -> None:
    ref, _ = same(prog_mixture_of_an_empty_batch)
    assert ref["LogProb.sum.eval"] == 0 and ref["posterior.get_log_prob"].shape == (2, 0)


# ------------------------------------------------------------------------------- Multinomial's total_count
def prog_multinomial_total_counts() -> Any:
    import numpy as np
    import torch
    from pixyz.distributions import Multinomial

    out = {}
    for k, tc in [("np.int64(3)", np.int64(3)), ("torch.tensor(3)", torch.tensor(3)), ("3.0", 3.0), ("0", 0)]:
        p = Multinomial(total_count=tc, probs=torch.tensor([.2, .3, .5]), var=["x"])
        out[k] = {"total_count": int(p.total_count), "drawn": p.sample(batch_n=2)["x"].shape}
    return out


def test_multinomial_takes_the_total_counts_pixyz_takes() -> None:
    """Pixyz stores ``total_count`` whatever it is (and never uses it: the documented difference); a numpy or torch
    integer or an integral float is the same count here, and ``total_count=0`` draws zero counts."""
    ref, ours = same(prog_multinomial_total_counts)
    from pyro_dgm.distributions import Multinomial
    for tc, n in [(np.int64(3), 3), (torch.tensor(3), 3), (3.0, 3), (0, 0)]:
        p = Multinomial(total_count=tc, probs=torch.tensor([.2, .3, .5]), var=["x"])
        assert p.total_count == n and type(p.total_count) is int
        assert p.sample(batch_n=4)["x"].sum(-1).tolist() == [float(n)] * 4
        assert p.sample(sample_shape=[2])["x"].sum(-1).eq(n).all()
    for bad in (-1, 2.5, "3", None):
        with pytest.raises(ValueError, match=r"Multinomial p: total_count must be a non-negative int"):
            Multinomial(total_count=bad, probs=torch.tensor([.5, .5]), var=["x"])


# ---------------------------------------------------------------------- probs outside [0, 1], unvalidated
def prog_bernoulli_probs_outside_the_unit_interval() -> Any:
    import torch
    from pixyz.distributions import Bernoulli
    return Bernoulli(probs=torch.tensor([1.5, 0.6]), var=["x"]).get_log_prob({"x": torch.tensor([[0., 1.]])})


def prog_draw_from_probs_outside_the_unit_interval() -> Any:
    import torch
    from pixyz.distributions import Bernoulli
    return Bernoulli(probs=torch.tensor([1.5, 0.6]), var=["x"]).sample(batch_n=2)


def prog_network_probs_above_one() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Bernoulli

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(3, 2)

        def forward(self, z):
            return {"probs": self.fc(z).exp() + 1}  # not a sigmoid: above 1
    return P().get_log_prob({"z": torch.ones(4, 3), "x": torch.ones(4, 2)})


def test_probs_outside_0_1_unvalidated_are_named_where_pixyz_scores_a_number() -> None:
    """With torch's validation off, Pixyz scores such probabilities (log of a negative number, clamped: −16.45);
    ours names the parameter and its range (an OutOfRangeError, also the RuntimeError torch raised here), where it
    blamed the value's shape. With validation on, both refuse."""
    pyro.enable_validation(False)
    for program in (prog_bernoulli_probs_outside_the_unit_interval, prog_network_probs_above_one):
        ref = run_pixyz(program)
        assert ref.isfinite().all()  # a meaningless number
        with pytest.raises(RuntimeError, match=r"p\(x(\|z)?\): cannot score 'x': its parameter 'probs' holds values "
                                               r"outside \[0, 1\]") as info:
            run_pyro_dgm(program)
        assert isinstance(info.value, ValueError)


def test_drawing_from_probs_outside_0_1_names_the_parameter() -> None:
    pyro.enable_validation(False)
    pixyz_error, ours = raises_same(prog_draw_from_probs_outside_the_unit_interval)
    assert issubclass(ours, pixyz_error) and issubclass(ours, ValueError)
    with renamed_import(), pytest.raises(ours, match=r"Bernoulli p\(x\): cannot draw 'x': its parameter 'probs' "
                                                     r"holds values outside \[0, 1\] \(e\.g\. 1\.5\)"):
        prog_draw_from_probs_outside_the_unit_interval()
    from pyro_dgm.distributions import Bernoulli
    with pytest.raises(ours, match="its parameter 'probs'"):
        Bernoulli(probs=torch.tensor([1.5, 0.6]), var=["x"]).sample(sample_shape=[3])


# ----------------------------------------------------------------------------------- constructor misuse
def prog_mixture_of_numbers() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel
    return MixtureModel(distributions=[1, 2], prior=Categorical(probs=torch.tensor([.3, .7]), var=["k"]))


def prog_mixture_of_one_distribution() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel, Normal
    return MixtureModel(distributions=Normal(loc=0., scale=1., var=["x"]),
                        prior=Categorical(probs=torch.tensor([1.]), var=["k"]))


def prog_mixture_of_a_number() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel
    return MixtureModel(distributions=5, prior=Categorical(probs=torch.tensor([1.]), var=["k"]))


def prog_product_of_numbers() -> Any:
    from pixyz.distributions import ProductOfNormal
    return ProductOfNormal([1, 2])


def prog_product_of_a_number() -> Any:
    from pixyz.distributions import ProductOfNormal
    return ProductOfNormal(5)


def prog_product_weighted_by_a_string() -> Any:
    import torch
    from pixyz.distributions import Normal, ProductOfNormal
    e = Normal(loc="a", scale=1., var=["z"], cond_var=["a"])
    return ProductOfNormal([e], weight_modalities="a").sample_mean({"a": torch.zeros(2, 1)})


def prog_product_weighted_by_a_number() -> Any:
    from pixyz.distributions import Normal, ProductOfNormal
    return ProductOfNormal([Normal(loc="a", scale=1., var=["z"], cond_var=["a"])], weight_modalities=3)


def prog_mixture_of_experts_of_numbers() -> Any:
    from pixyz.distributions.moe import MixtureOfNormal
    return MixtureOfNormal([1, 2])


@pytest.mark.parametrize("program, pattern", [
    (prog_mixture_of_numbers, r"MixtureModel p: component 0 must be a pyro_dgm distribution, got int"),
    (prog_mixture_of_one_distribution, r"MixtureModel p: distributions must be a list of distributions .*got one, "
                                       r"Normal p\(x\)"),
    (prog_mixture_of_a_number, r"MixtureModel p: distributions must be a list of distributions .*got int 5"),
    (prog_product_of_numbers, r"ProductOfNormal p: expert 0 must be a pyro_dgm distribution, got int"),
    (prog_product_of_a_number, r"ProductOfNormal p: p must be a list of distributions .*got int 5"),
    (prog_product_weighted_by_a_string, r"ProductOfNormal p: weight_modalities must be a list of 2 numbers .*'a'"),
    (prog_product_weighted_by_a_number, r"ProductOfNormal p: weight_modalities must be a list of 2 numbers .*got 3"),
    (prog_mixture_of_experts_of_numbers, r"MixtureOfNormal p: expert 0 must be a pyro_dgm distribution, got int"),
], ids=lambda p: p.__name__[5:] if callable(p) else "")
def test_constructor_misuse_is_named_and_pixyzs_type(program: Callable[[], Any], pattern: str) -> None:
    pixyz_error, ours = raises_same(program)
    assert issubclass(ours, pixyz_error), f"Pixyz raises {pixyz_error.__name__}, ours {ours.__name__}"
    assert issubclass(ours, (ValueError, TypeError))
    with renamed_import(), pytest.raises(ours, match=pattern):
        program()


# ----------------------------------------------------------------------------------------- numpy values
def prog_numpy_views_of_negative_strides() -> Any:
    import numpy as np
    import torch
    from torch import nn
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(3, 2)

        def forward(self, z):
            return {"loc": self.fc(z), "scale": torch.ones(1)}

    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    z = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    p, q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]), P()
    return {"value": p.get_log_prob({"x": a[::-1]}), "copy": p.get_log_prob({"x": a[::-1].copy()}),
            "network input": q.sample_mean({"z": z[::-1]}), "its copy": q.sample_mean({"z": z[::-1].copy()}),
            "constant": Normal(loc=a[::-1], scale=1., var=["x"]).sample_mean(),
            "loss": LogProb(p).eval({"x": a[::-1]})}


def test_numpy_views_of_negative_strides_are_the_arrays_they_show() -> None:
    """(Pixyz takes no numpy value at all: the documented 'runs here' difference; here a reversed view is the array
    it shows, as its copy is.)"""
    with pytest.raises((ValueError, TypeError)):
        run_pixyz(prog_numpy_views_of_negative_strides)
    ours = run_pyro_dgm(prog_numpy_views_of_negative_strides)
    assert_same(ours["copy"], ours["value"])
    assert_same(ours["its copy"], ours["network input"])
    assert_same(torch.tensor([[[2., 3.], [0., 1.]]]), ours["constant"])
    assert_same(ours["copy"], ours["loss"])


def prog_numpy_strings_as_a_value() -> Any:
    import numpy as np
    import torch
    from pixyz.distributions import Normal
    return Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]).get_log_prob({"x": np.array([["a", "b"]])})


def prog_numpy_strings_as_a_network_input() -> Any:
    import numpy as np
    import torch
    from pixyz.distributions import Normal
    p = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="q")
    return p.sample({"z": np.array([["a", "b"]])})


@pytest.mark.parametrize("program, pattern", [
    (prog_numpy_strings_as_a_value, r"Normal p\(x\): the value of 'x' is a numpy array of dtype <U1"),
    (prog_numpy_strings_as_a_network_input, r"Normal q\(x\|z\): the value of 'z' is a numpy array of dtype <U1"),
], ids=lambda p: p.__name__[5:] if callable(p) else "")
def test_numpy_strings_are_a_type_error_naming_the_variable(program: Callable[[], Any], pattern: str) -> None:
    pixyz_error, ours = raises_same(program)
    assert issubclass(ours, pixyz_error) and issubclass(ours, TypeError)
    with renamed_import(), pytest.raises(ours, match=pattern):
        program()


# ------------------------------------------------------------------------- a scalar where classes are needed
def _scalar_class_program(family: str, expr: str, batch_n: int | None) -> Callable[[], Any]:
    def program() -> Any:
        import torch
        import pixyz.distributions as pd
        extra = {"temperature": torch.tensor(.5)} if family == "RelaxedCategorical" else {}
        kw = "concentration" if family == "Dirichlet" else "probs"
        p = getattr(pd, family)(var=["x"], **{kw: eval(expr)}, **extra)
        if batch_n is None:
            return {"sample": p.sample()["x"], "drawn": p.sample(sample_shape=[2])["x"], "mean": p.sample_mean()}
        return p.sample(batch_n=batch_n)
    program.__name__ = f"prog_{family}_{expr}_{batch_n}"
    return program


_FAMILIES = ["Categorical", "Multinomial", "Dirichlet", "RelaxedCategorical"]


@pytest.mark.parametrize("family", _FAMILIES)
@pytest.mark.parametrize("expr, batch_n", [("0.2", 2), ("torch.tensor(0.2)", 1)])
def test_batch_n_draws_of_a_scalar_class_parameter_are_refused_naming_it(family: str, expr: str,
                                                                         batch_n: int) -> None:
    program = _scalar_class_program(family, expr, batch_n)
    pixyz_error, ours = raises_same(program)
    assert issubclass(ours, pixyz_error) and issubclass(ours, (ValueError, IndexError))
    kw = "concentration" if family == "Dirichlet" else "probs"
    with renamed_import(), pytest.raises(ours, match=rf"{family} p\(x\): parameter '{kw}' is a scalar \(0.2\), but "
                                                     rf"a {family} needs a class dim"):
        program()


@pytest.mark.parametrize("family", ["Categorical", "Multinomial", "Dirichlet"])
def test_a_scalar_class_parameter_without_batch_n_is_one_class_as_in_pixyz(family: str) -> None:
    same(_scalar_class_program(family, "0.2", None))
