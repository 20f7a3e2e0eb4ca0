"""Eleventh round: a fuzzer of the Distribution API over every family, and an attack on round 7's fixes, under Pixyz
0.3.3 and here (:mod:`pixyz_harness`).

- A mixture inside a renaming or a product refused ``sum_features=False``/``feature_dims``; Pixyz ignores them
  there, as for a plain mixture (here with the same warning). A flow's ``feature_dims`` naming every feature dim is
  the whole log-density (Pixyz's value is right there): it was refused with the per-feature options.
- A product with an ``EmpiricalDistribution`` returned the data's variable with ``return_all=False`` (Pixyz leaves
  the inputs out) and put it before the other given values with ``return_all=True``.
- Round 7 refused Pixyz programs: ``retain_graph`` given as a numpy integer or a 0-d tensor, and changed the class
  of an optimizer's own exception. ``ValueLoss`` of a numpy array, and ``VAE(..., other_distributions=None)``
  (Pixyz's ``tolist(None)`` is ``[None]``), were older differences.
- The attack on these fixes: a ``MixtureOfNormal`` (a Normal over split rows under Pixyz) must still refuse
  per-feature options; a flow's ``feature_dims`` out of range or repeated must not count as "every feature dim";
  an optimizer's exception of other arguments (a code, its own ``__str__``) is left as it is, with a note.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, renamed_import, run_both
from pixyz_parts import vae_parts


def prog_mixture_options_inside_a_renaming_and_a_product() -> Any:
    import warnings

    import torch

    import pixyz.distributions as D

    comps = [D.Normal(loc=torch.full([2], float(k)), scale=torch.full([2], 1.0 + k), var=["x"], name=f"p_{k}")
             for k in range(2)]
    m = D.MixtureModel(comps, D.Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="p_{prior}"))
    w = D.Normal(loc="s", scale=torch.ones(2), var=["w"], cond_var=["s"], name="r")
    x = torch.ones(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (ours warns that the options are ignored; Pixyz says nothing)
        renamed = m.replace_var(x="s")
        return [m.get_log_prob({"x": x}, sum_features=False), renamed.get_log_prob({"s": x}, sum_features=False),
                (renamed * w).get_log_prob({"s": x, "w": x}, feature_dims=[-1])]


def prog_flow_feature_dims_naming_every_feature_dim() -> Any:
    import torch

    import pixyz.distributions as D
    from pixyz.flows import PlanarFlow

    prior = D.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    q = D.InverseTransformedDistribution(prior, PlanarFlow(2), var=["x"])
    x = torch.randn(3, 2)
    return q.get_log_prob({"x": x}), q.get_log_prob({"x": x}, feature_dims=[-1]), \
        q.get_log_prob({"x": x}, feature_dims=[1])


def prog_a_product_with_data() -> Any:
    import torch

    import pixyz.distributions as D

    data = D.EmpiricalDistribution(["x"])
    w = D.Normal(loc="x", scale=torch.ones(2), var=["w"], cond_var=["x"], name="p")
    joint = data * w
    x, a = torch.randn(3, 2), torch.ones(1)
    return [list(joint.sample({"x": x}, return_all=False)), list(joint.sample({"x": x, "a": a})),
            list(joint.sample({"a": a, "x": x})), list(joint.marginalize_var(["w"]).sample({"x": x}, return_all=False))]


def prog_value_loss_of_an_array() -> Any:
    import numpy as np

    from pixyz.losses import ValueLoss

    v = ValueLoss(np.array([1.0, 2.0]))
    return v.eval(), str(v), v.value.dtype


def prog_model_options_pixyz_takes(option: str) -> Any:
    def program() -> Any:
        import numpy as np
        import torch

        from pixyz.losses import Expectation as E
        from pixyz.losses import KullbackLeibler, LogProb
        from pixyz.models import VAE, Model

        q, p, prior, x = vae_parts()
        if option == "other_distributions=None":
            m = VAE(q, p, other_distributions=None, regularizer=KullbackLeibler(q, prior),
                    optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
        else:
            loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
            rg = np.int64(1) if option == "retain_graph=np.int64(1)" else torch.tensor(True)
            m = Model(loss, distributions=[q, p], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2},
                      retain_graph=rg)
        return [m.train({"x": x}), m.train({"x": x.clone()}), str(m).split("Loss")[0]]

    program.__name__ = "prog_" + "".join(c if c.isalnum() else "_" for c in option)
    return program


@pytest.mark.parametrize("program", [
    prog_mixture_options_inside_a_renaming_and_a_product, prog_flow_feature_dims_naming_every_feature_dim,
    prog_a_product_with_data, prog_value_loss_of_an_array,
    prog_model_options_pixyz_takes("other_distributions=None"),
    prog_model_options_pixyz_takes("retain_graph=np.int64(1)"),
    prog_model_options_pixyz_takes("retain_graph=tensor(True)")])
def test_pixyz_programs_run_with_pixyzs_numbers(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_a_mixture_inside_a_renaming_warns_naming_the_new_variable() -> None:
    with renamed_import():
        import pyro_dgm.distributions as D

    comps = [D.Normal(loc=torch.full([2], float(k)), scale=torch.ones(2), var=["x"], name=f"p_{k}") for k in range(2)]
    m = D.MixtureModel(comps, D.Categorical(probs=torch.tensor([0.5, 0.5]), var=["z"], name="p_{prior}"))
    with pytest.warns(UserWarning, match=r"ignored, as in Pixyz: this is log p\(s\)"):
        m.replace_var(x="s").get_log_prob({"s": torch.ones(3, 2)}, sum_features=False)


def test_a_flows_feature_dims_other_than_all_are_still_refused() -> None:
    import pyro_dgm.distributions as D
    from pyro_dgm.flows import PlanarFlow

    prior = D.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    q = D.InverseTransformedDistribution(prior, PlanarFlow(2), var=["x"])
    for bad in ({"sum_features": False}, {"feature_dims": [0]}, {"feature_dims": [0, 1]}):
        with pytest.raises(ValueError, match="does not factorize over features"):
            q.get_log_prob({"x": torch.randn(3, 2)}, **bad)


def test_an_optimizers_own_exception_keeps_its_class_and_gains_the_models_name() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Refusal(ValueError):
        pass

    class Picky(torch.optim.SGD):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            raise Refusal("custom refusal")

    p = Normal(loc=0.0, scale=1.0, var=["x"])
    with pytest.raises(Refusal, match=r"custom refusal\s+\(Model: cannot build the optimizer Picky"):  # (a note)
        Model((-LogProb(p)).mean(), distributions=[torch.nn.Linear(1, 1)], optimizer=Picky,
              optimizer_params={"bad": True})


def test_custom_prob_feature_dims_out_of_range_names_it() -> None:
    from pyro_dgm.distributions import CustomProb
    from pyro_dgm.utils.checks import DimensionError

    p = CustomProb(lambda x: -x ** 2, var=["x"])
    with pytest.raises(DimensionError, match=r"CustomProb p\(x\): cannot sum .* feature_dims=\[1, 2\]"):
        p.get_log_prob({"x": torch.ones(3, 2)}, feature_dims=[1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(p.get_log_prob({"x": torch.ones(3, 2)}, feature_dims=[1]), torch.full((3,), -2.0))


# ------------------------------------------------------------------------------------------------ the attack's cases
def test_mixture_of_normal_still_refuses_per_feature_options() -> None:
    # Pixyz's MixtureOfNormal is a Normal over split batch rows: its per-feature values are no mixture's (porting.md)
    from pyro_dgm.distributions import MixtureOfNormal, Normal

    experts = [Normal(loc=torch.full([2], float(k)), scale=torch.ones(2), var=["z"], name=f"q_{k}") for k in (0, 1)]
    q = MixtureOfNormal(experts)
    with pytest.raises(ValueError, match="does not factorize over features"):
        q.get_log_prob({"z": torch.zeros(4, 2)}, sum_features=False)


@pytest.mark.parametrize("dims", [[3], [-3], [1, 1], [-1, 1], [0, 1], [True]])
def test_a_flows_feature_dims_out_of_range_or_repeated_are_refused(dims: list[int]) -> None:
    import pyro_dgm.distributions as D
    from pyro_dgm.flows import PlanarFlow

    prior = D.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    q = D.InverseTransformedDistribution(prior, PlanarFlow(2), var=["x"])
    with pytest.raises(ValueError, match="does not factorize over features"):
        q.get_log_prob({"x": torch.randn(3, 2)}, feature_dims=dims)


def test_an_optimizers_exception_of_other_arguments_is_left_as_it_is() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Coded(ValueError):
        def __str__(self) -> str:
            return f"E{self.args[0]}: {self.args[1]}"

    class Picky(torch.optim.SGD):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            raise Coded(42, "bad lr")

    p = Normal(loc=0.0, scale=1.0, var=["x"])
    with pytest.raises(Coded) as caught:
        Model((-LogProb(p)).mean(), distributions=[torch.nn.Linear(1, 1)], optimizer=Picky)
    assert caught.value.args == (42, "bad lr") and str(caught.value) == "E42: bad lr"
    assert "Model: cannot build the optimizer Picky" in caught.value.__notes__[0]

    class ReadOnly(ValueError):  # a user's exception whose args cannot be set, or of one message: kept as they are
        @property
        def args(self) -> tuple:  # type: ignore[override]
            return ("ro",)

    for error in (ReadOnly(), Coded("E42")):
        def refuse(params: Any, error: Exception = error, **kwargs: Any) -> Any:
            raise error

        with pytest.raises(type(error)) as caught:
            Model((-LogProb(p)).mean(), distributions=[torch.nn.Linear(1, 1)], optimizer=refuse)
        assert caught.value is error and caught.value.args == error.args


def test_custom_prob_repeated_feature_dims_name_it() -> None:
    from pyro_dgm.distributions import CustomProb
    from pyro_dgm.utils.checks import ShapeError

    p = CustomProb(lambda x: -x ** 2, var=["x"])
    with pytest.raises(ShapeError, match=r"CustomProb p\(x\): cannot sum .* feature_dims=\[1, 1\]"):
        p.get_log_prob({"x": torch.ones(3, 2)}, feature_dims=[1, 1])
