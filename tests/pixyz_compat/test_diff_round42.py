"""Forty-second round: a flow distribution given a value of the wrong shape where a layer of its ``FlowList`` cannot
take that shape, and a GAN's discriminator trained by a ``pyro.optim`` optimizer, under Pixyz and here
(:mod:`pixyz_harness`).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm


def _image_flow_given_a_flat_value() -> Any:
    import torch

    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, ChannelConv, FlowList, Squeeze

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 8, 1)

        def forward(self, x: torch.Tensor) -> tuple:
            s, t = self.conv(x).chunk(2, dim=1)
            return torch.tanh(s), t

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[8, 1, 1])
    flow = FlowList([AffineCoupling(8, mask_type="channel_wise", scale_translate_net=Net(), inverse_mask=False),
                     Squeeze(), ChannelConv(8)])
    p = InverseTransformedDistribution(prior=prior, flow=flow, var=["x"])
    return p.get_log_prob({"x": torch.randn(2, 8)})


def test_a_flat_value_given_to_an_image_flow_list_is_named_and_stays_a_runtime_error() -> None:
    """``InverseTransformedDistribution`` over ``FlowList([AffineCoupling, Squeeze(), ChannelConv])`` given a value
    of shape ``(2, 8)`` where it takes ``(..., 2, 2, 2)``: Pixyz meets torch's ``RuntimeError`` (conv2d's input
    dims). Here the list's shape bookkeeping asked ``Squeeze`` for the shape of a 2-d input and Python's "not enough
    values to unpack" came out, naming nothing (probe p227). The error names the distribution, the variable and the
    shape it expects, and is a ``RuntimeError`` as Pixyz's is (and a ``ValueError``)."""
    ref_kind, our_kind = raises_same(_image_flow_given_a_flat_value)
    assert issubclass(ref_kind, RuntimeError)
    assert issubclass(our_kind, RuntimeError) and issubclass(our_kind, ValueError)
    with pytest.raises(ValueError) as info:
        run_pyro_dgm(_image_flow_given_a_flat_value)
    text = str(info.value)
    assert "InverseTransformedDistribution" in text and "'x'" in text and "(..., 2, 2, 2)" in text
    assert "(2, 8)" in text


def _gan_steps(d_optimizer: Any, d_optimizer_params: Any, steps: int = 3) -> Any:
    import torch

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.models import GAN

    torch.manual_seed(0)

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = torch.nn.Linear(3, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.net(z)}

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[3], name="p_{prior}")
    d = D()
    kw = {"d_optimizer": d_optimizer}
    if d_optimizer_params is not None:
        kw["d_optimizer_params"] = d_optimizer_params
    model = GAN((G() * prior).marginalize_var("z"), d, **kw)
    data = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    losses = [torch.stack(model.train({"x": data})) for _ in range(steps)]
    return torch.stack(losses), [p.detach().clone() for p in d.parameters()]


@pytest.mark.parametrize("how", ["factory", "factory without arguments", "instance"])
def test_a_pyro_optim_optimizer_trains_the_discriminator_as_its_torch_class_does(how: str) -> None:
    """``GAN(p, d, d_optimizer=pyro.optim.Adam)``: the generator's ``optimizer=`` takes ``pyro.optim`` optimizers
    (as a ``Model``'s does); the discriminator's raised Pyro's bare ``AssertionError`` without
    ``d_optimizer_params``, and a ``TypeError`` about a lambda's keyword with them (Pixyz takes neither; probe
    p226). It builds the torch optimizer the ``pyro.optim`` one wraps: the losses and the discriminator's weights
    after three steps are those of ``torch.optim.Adam`` with the same arguments."""
    import pyro.optim

    lr = {"lr": 0.05} if how != "factory without arguments" else {}
    ref = _gan_steps(torch.optim.Adam, dict(lr))
    if how == "factory":
        ours = _gan_steps(pyro.optim.Adam, dict(lr))
    elif how == "factory without arguments":
        ours = _gan_steps(pyro.optim.Adam, None)
    else:
        ours = _gan_steps(pyro.optim.Adam(dict(lr)), None)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pyro_optim_optimizer_with_clip_args_for_the_discriminator_is_refused_by_name() -> None:
    """The term has no place for a ``pyro.optim`` optimizer's ``clip_args``: a ``ValueError`` that names the term
    and the arguments, rather than clipping silently ignored."""
    import pyro.optim

    with pytest.raises(ValueError, match=r"clip_args=\{'clip_norm': 1\.0\}"):
        _gan_steps(pyro.optim.Adam({"lr": 0.05}, {"clip_norm": 1.0}), None)


def _product_of_normal_with_no_expert_given() -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    e1 = Normal(var=["z"], cond_var=["a"], loc="a", scale=torch.tensor(1.0), name="p1")
    e2 = Normal(var=["z"], cond_var=["b"], loc="b", scale=torch.tensor(2.0), name="p2")
    poe = ProductOfNormal([e1, e2])
    return {"params": poe.get_params({}), "mean": poe.sample_mean({}), "draw": poe.sample()["z"].shape,
            "entropy": poe.get_entropy({}), "one given": poe.get_params({"a": torch.ones(3, 1)})}


def test_a_product_of_normals_given_no_expert_is_the_0_d_prior_as_under_pixyz() -> None:
    """``ProductOfNormal`` of experts of scalar features, none of whose inputs is given: the product is its standard
    normal prior, whose parameters Pixyz gives 0-d (``loc`` 0, ``scale`` 1, a draw of shape ``()``, the entropy
    0.5 log(2 pi e) as a 0-d tensor). Here they had a batch dim of 1 that no input asked for (probe p229). With one
    expert given, the batch and feature dims are the expert's, as before."""
    ref, ours = run_both(_product_of_normal_with_no_expert_given)
    assert_same(ref, ours)
    assert ours["entropy"].item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e))


def _called_terms_of_numbers() -> Any:
    from pixyz.losses import Parameter, ValueLoss

    beta = Parameter("beta")
    out = {}
    for name, loss in {"beta": beta, "beta + beta": beta + beta, "-beta": -beta, "beta * 2": beta * 2,
                       "2.5": ValueLoss(2.5), "2.5 + beta": ValueLoss(2.5) + beta}.items():
        called, _ = loss({"beta": 3.0})
        out[name] = (type(called).__name__, float(called), type(loss.eval({"beta": 3.0})).__name__)
    return out


def test_a_called_term_whose_value_is_a_number_returns_the_number_as_pixyz_does() -> None:
    """``Parameter("beta")({"beta": 3.0})``: Pixyz's term returns the value it is given, the number 3.0 (and so
    ``beta + beta`` and ``-beta`` give numbers), while a term holding a constant (``ValueLoss``, and ``beta * 2``,
    whose 2 Pixyz holds as one) gives a tensor. Here every called term's number was made a tensor (a conversion
    kept from when ``ValueLoss`` held a Python number; probe p229's notes). ``eval`` agreed already."""
    ref, ours = run_both(_called_terms_of_numbers)
    assert ref == ours
    assert ours["beta"][0] == "float" and ours["2.5"][0] == "Tensor"


def _relaxed_moments_of_integer_probabilities() -> Any:
    import torch

    from pixyz.distributions import RelaxedBernoulli

    p = RelaxedBernoulli(probs="y", var=["x"], cond_var=["y"], temperature=torch.tensor(0.5))
    y = torch.tensor([[1, 0], [0, 1]])
    return {"mean": p.sample_mean({"y": y}), "variance": p.sample_variance({"y": y})}


def test_a_relaxed_bernoullis_moments_of_integer_probabilities_are_those_of_its_hard_bernoulli() -> None:
    """A ``RelaxedBernoulli`` whose probabilities come from an input of 0s and 1s of an integer dtype: Pixyz's
    moments are those of the hard Bernoulli it scores under, built from the integers, which returns them (the mean)
    and ``p (1 - p)`` (the variance), as integers. Here the relaxed torch distribution was built first, which cannot
    take integers: a ``DTypeError`` (torch's ``finfo`` error before the last session; probe p215's §3 item)."""
    ref, ours = run_both(_relaxed_moments_of_integer_probabilities)
    assert_same(ref, ours)
    assert ours["mean"].dtype == torch.int64


def _flow_after_a_refused_value() -> Any:
    import torch

    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import Flatten, FlowList, Squeeze, Unsqueeze

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[16])
    p = InverseTransformedDistribution(prior=prior, flow=FlowList([Squeeze(), Unsqueeze(), Flatten()]), var=["x"])
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    first = p.get_log_prob({"x": x})
    try:
        p.get_log_prob({"x": torch.rand(2, 1, 3, 4)})  # an odd height: refused
        refused = False
    except ValueError:
        refused = True
    draw = p.sample(batch_n=2)["x"]
    return {"first": first, "refused": refused, "draw": draw.shape, "again": p.get_log_prob({"x": x})}


def test_a_refused_value_leaves_the_flows_sizes_as_they_were() -> None:
    """``FlowList([Squeeze(), Unsqueeze(), Flatten()])`` under an ``InverseTransformedDistribution``: a value of
    odd height is refused (both), and the flow still draws and scores images of the shape it had. Here the list's
    shape bookkeeping had taken the ``Flatten``'s size from the refused value (``Squeeze`` computed a shape for odd
    sizes), so the error named the wrong shape and the next ``sample()`` raised (probe p231)."""
    ref, ours = run_both(_flow_after_a_refused_value)
    assert_same(ref, ours)


def test_a_flat_value_given_first_to_an_image_flow_names_the_variable() -> None:
    """``FlowList([Squeeze(), Flatten()])`` whose ``Flatten`` has no size yet, given a flat ``(2, 16)`` value: a
    ``ShapeError`` naming the distribution and ``'x'`` (it was the ``Flatten``'s own "unknown until forward() has
    run", naming neither; Pixyz fails in Python's unpacking)."""
    import pyro_dgm.distributions as D
    import pyro_dgm.flows as F

    prior = D.Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[16])
    p = D.InverseTransformedDistribution(prior=prior, flow=F.FlowList([F.Squeeze(), F.Flatten()]), var=["x"])
    with pytest.raises(RuntimeError) as info:
        p.get_log_prob({"x": torch.rand(2, 16)})
    assert isinstance(info.value, ValueError)
    assert "InverseTransformedDistribution" in str(info.value) and "'x' of shape (2, 16)" in str(info.value)
    assert p.get_log_prob({"x": torch.rand(2, 1, 4, 4)}).shape == (2,)  # the right shape still works after


def test_a_network_with_its_own_module_walk_is_run_at_each_use_when_it_changes_itself() -> None:
    """A ``Deterministic`` whose network overrides ``named_modules()`` to list a layer held in a plain list, and
    whose forward changes that layer's bias in place: Pixyz runs it at each use, and the memoizer must see the
    change (it read ``module.parameters()``, which goes through the override; the walk of ``_modules`` this session
    wrote did not, and reused a stale pass; probe p231). Two uses in one scope: two runs, two outputs."""
    from pyro_dgm.distributions import Deterministic
    from pyro_dgm.poutine import memoize

    calls = [0]

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2)
            self.hidden = [torch.nn.Linear(2, 2)]

        def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True) -> Any:
            yield prefix, self
            yield prefix + ".a", self.a
            yield prefix + ".hidden0", self.hidden[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            with torch.no_grad():
                self.hidden[0].bias.add_(1.0)
            return self.a(x) + self.hidden[0](x)

    class Dt(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="d")
            self.net = Net()

        def forward(self, x: torch.Tensor) -> dict:
            return {"z": self.net(x)}

    d, x = Dt(), torch.randn(3, 2)
    with memoize():
        a, b = d.sample({"x": x})["z"], d.sample({"x": x})["z"]
    assert calls[0] == 2
    torch.testing.assert_close(b - a, torch.ones(3, 2))  # each run adds 1 to the bias first: +1 per output


def test_a_pyro_optim_optimizers_per_parameter_arguments_are_checked_and_errors_name_the_term() -> None:
    """``d_optimizer=pyro.optim.Adam(lambda name, param: {"learning_rate": 0.5})``: Pyro refuses the misspelt key
    (torch's ``TypeError``); here torch's parameter groups kept it and trained at the default rate, silently. And
    ``d_optimizer_params={"lrr": 0.1}`` with ``pyro.optim.Adam`` gave torch's bare ``TypeError``: both name the
    term now (probe p231)."""
    import pyro.optim

    with pytest.raises(TypeError, match=r"'learning_rate', which Adam does not take"):
        _gan_steps(pyro.optim.Adam(lambda name, param: {"learning_rate": 0.5}), None)
    with pytest.raises(TypeError, match=r"^AdversarialJensenShannon: cannot build the optimizer Adam.*'lrr'"):
        _gan_steps(pyro.optim.Adam, {"lrr": 0.1})
    with pytest.raises(ValueError, match=r"^AdversarialJensenShannon: .*Invalid learning rate"):
        _gan_steps(pyro.optim.Adam, {"lr": -1.0})


def test_a_mixture_scores_a_list_of_numbers_as_the_tensor_it_spells() -> None:
    """``MixtureModel.get_log_prob({"x": [0.1, 0.2]})``: a number or a list of numbers is the tensor it spells, as
    for every family (``docs/porting.md``); the mixture said its *shape* was wrong ("got list"). Pixyz fails with an
    ``AttributeError`` on a list."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc=torch.tensor(float(k)), scale=torch.tensor(1.0), var=["x"], name=f"p{k}") for k in (0, 2)]
    mix = MixtureModel(comps, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="pz"))
    torch.testing.assert_close(mix.get_log_prob({"x": [0.1, 0.2]}), mix.get_log_prob({"x": torch.tensor([0.1, 0.2])}))
    torch.testing.assert_close(mix.get_log_prob({"x": 0.5}), mix.get_log_prob({"x": torch.tensor(0.5)}))


def _relaxed_mean_of_bool_probabilities() -> Any:
    import torch

    from pixyz.distributions import RelaxedBernoulli

    class P(RelaxedBernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], temperature=torch.tensor(0.5))

        def forward(self, y: torch.Tensor) -> dict:
            return {"probs": y > 0}

    return P().sample_mean({"y": torch.tensor([[-1.0, 2.0, 3.0]])})


def test_a_relaxed_bernoullis_mean_of_bool_probabilities_is_them() -> None:
    """A network returning bool probabilities (``y > 0``): Pixyz's mean is the bool tensor, as a plain Bernoulli's
    is here too; the integer fallback above left bools out, and raised (probe p233)."""
    ref, ours = run_both(_relaxed_mean_of_bool_probabilities)
    assert_same(ref, ours)


def _complex_parameter_added_to_the_optimizer() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.models import Model

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
    gamma = torch.nn.Parameter(torch.tensor(0.3 + 0.2j))

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.fc(y) + (gamma * gamma.conj()).real.float(), "scale": torch.ones(1)}

    torch.manual_seed(0)
    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.1})
    model.optimizer.add_param_group({"params": [gamma]})
    losses = [model.train({"x": x.clone(), "y": y.clone()}) for _ in range(3)]  # (new tensors: Pixyz's cache)
    return {"losses": [float(v) for v in losses], "gamma": gamma.detach().clone(), "bias": p.fc.bias.detach()}


def test_a_complex_parameter_added_to_the_optimizer_trains_as_under_pixyz() -> None:
    """A complex parameter in a group added with ``add_param_group``: Pixyz trains it (Adam takes complex
    parameters); the finiteness check of ``Model.train`` summed its gradient into a Python float and raised a bare
    "must be real number, not complex" (probe p233). It reads the real and imaginary parts now."""
    ref, ours = run_both(_complex_parameter_added_to_the_optimizer)
    assert_same(ref, ours)
    assert ours["gamma"].imag != 0.2  # it trained


def _weighted_product_given(given: str) -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    e1 = Normal(var=["z"], cond_var=["a"], loc="a", scale=torch.tensor(1.0), name="p1")
    e2 = Normal(var=["z"], cond_var=["b"], loc="b", scale=torch.tensor(1.0), name="p2")
    poe = ProductOfNormal([e1, e2], weight_modalities=[0.5, 1.0, 1.0])
    return poe.get_params({"a": torch.zeros(3, 1)} if given == "a" else {})["scale"]


def test_a_weighted_products_prior_alone_is_the_prior_to_its_weight() -> None:
    """``ProductOfNormal`` with prior weight w0 = 0.5: given one expert (scale 1), both libraries give the product's
    scale 1/sqrt(w0 + 1); given none, Pixyz ignores w0 and gives 1, while the prior raised to w0 has scale
    1/sqrt(w0) = 1.4142, which pyro_dgm gives (probe p237; ``docs/porting.md``'s table)."""
    ref, ours = run_both(lambda: _weighted_product_given("a"))
    assert_same(ref, ours)
    assert float(ours.flatten()[0]) == pytest.approx(1 / math.sqrt(1.5), rel=1e-6)
    ref, ours = run_both(lambda: _weighted_product_given("none"))
    assert float(ref.flatten()[0]) == pytest.approx(1.0)  # Pixyz's
    assert float(ours.flatten()[0]) == pytest.approx(1 / math.sqrt(0.5), rel=1e-6)


def test_a_mixture_of_normal_refuses_an_expert_without_a_location_and_scale() -> None:
    """``MixtureOfNormal([Normal, Bernoulli])``: Pixyz fails at the first use (``KeyError: 'loc'``); here it mixed a
    probability mass with a density and drew 0/1 values for half the rows (probe p237). Refused when built, naming
    the expert, as ``ProductOfNormal`` refuses it."""
    from pyro_dgm.distributions import Bernoulli, MixtureOfNormal, Normal

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q")
    b = Bernoulli(var=["z"], cond_var=["y"], probs="y", name="b")
    with pytest.raises(ValueError, match=r"expert 1 b\(z\|y\) is a Bernoulli"):
        MixtureOfNormal([q, b], name="m")


def _mixture_of_a_user_family() -> Any:
    import torch

    from pixyz.distributions import MixtureOfNormal, Normal
    from pixyz.distributions.exponential_distributions import DistributionBase

    class MyNormal(DistributionBase):
        def __init__(self, var: list, cond_var: list, name: str, **kwargs: Any) -> None:
            super().__init__(var=var, cond_var=cond_var, name=name, **kwargs)

        @property
        def params_keys(self) -> list:
            return ["loc", "scale"]

        @property
        def distribution_torch_class(self) -> Any:
            return torch.distributions.Normal

        @property
        def distribution_name(self) -> str:
            return "MyNormal"

    q = Normal(var=["z"], cond_var=["a"], loc="a", scale=torch.tensor(1.0), name="q")
    u = MyNormal(var=["z"], cond_var=["b"], name="u", loc="b", scale=torch.tensor(2.0))
    m = MixtureOfNormal([q, u], name="m")
    return m.get_log_prob({"a": torch.zeros(4, 1), "b": torch.ones(4, 1), "z": torch.full((4, 1), 0.5)}).shape


def test_a_mixture_of_normal_takes_a_pixyz_style_family_of_location_and_scale() -> None:
    """A user family written as Pixyz's (``params_keys = ["loc", "scale"]`` and a torch ``Normal``) as an expert
    of ``MixtureOfNormal``: Pixyz builds and scores it; the check of the last round read the class's parameter
    groups, which such a family sets on its instance, and refused it (probe p238)."""
    ref, ours = run_both(_mixture_of_a_user_family)
    assert ref == ours == (4,)
