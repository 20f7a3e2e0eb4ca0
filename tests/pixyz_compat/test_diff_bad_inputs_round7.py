"""Bad inputs, seventh round (constructors and the Model API), under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- Valid Pixyz programs we refused: ``Model(loss, distributions=[q, None, p])`` (Pixyz's ``ModuleList`` keeps the
  ``None``, trains the others and prints it among the deterministic functions), ``ValueLoss([1., 2.])`` (Pixyz's
  buffer is the list's tensor) and a ``GAN`` whose discriminator generates two variables (Pixyz uses the first).
- Values Pixyz takes silently into wrong numbers, refused here naming the argument: a negative ``clip_grad_norm``
  (the gradient turned around) or ``clip_grad_value`` (every element set to it), a relaxed family's temperature of
  0 or less (NaN or mirrored samples), ``ProductOfNormal`` weights that are negative or all 0 (NaN parameters).
- Errors that named nothing, now ``TypeError``/``ValueError`` naming the model or distribution: an optimizer that
  torch refuses to build (unknown or ill-typed ``optimizer_params``, a class that is no optimizer), a string
  ``retain_graph``, a list given to ``ElementWiseProductOfNormal``, a ``CustomProb`` function returning a float,
  an unknown keyword to ``Deterministic``, a string ``metric`` for ``WassersteinDistance``.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, renamed_import, run_both, run_pixyz
from pixyz_parts import gan_generator, vae_parts


# ------------------------------------------------------------------------------------------------ valid programs
def prog_model_with_none_among_its_distributions() -> Any:
    import torch

    from pixyz.losses import KullbackLeibler, LogProb
    from pixyz.losses import Expectation as E
    from pixyz.models import Model

    q, p, prior, x = vae_parts()
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    m = Model(loss, distributions=[q, None, p], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    return [m.train({"x": x}), m.train({"x": x.clone()}), m.test({"x": x.clone()}), str(m).split("Loss")[0],
            [t.detach().clone() for t in q.parameters()]]


def prog_value_loss_of_a_list() -> Any:
    import torch

    from pixyz.losses import ValueLoss

    v = ValueLoss([1.0, 2.0])
    return v.eval(), str(v), (v * 2).eval(), v.value.dtype, torch.rand(1)


def prog_gan_whose_discriminator_generates_two_variables() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic
    from pixyz.models import GAN

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t", "u"], cond_var=["x"], name="d")
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = torch.sigmoid(self.fc(x))
            return {"t": h[:, :1], "u": h[:, 1:]}

    p = gan_generator()
    gan = GAN(p, D(), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2},
              d_optimizer=torch.optim.Adam, d_optimizer_params={"lr": 1e-2})
    x = torch.randn(6, 3)
    return [[float(v) for v in gan.train({"x": x})] for _ in range(2)], [t.detach().clone() for t in p.parameters()]


@pytest.mark.parametrize("program", [prog_model_with_none_among_its_distributions, prog_value_loss_of_a_list,
                                     prog_gan_whose_discriminator_generates_two_variables])
def test_valid_pixyz_programs_run_with_pixyzs_numbers(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


# ------------------------------------------------------------------------------------------------ wrong numbers
def prog_negative_clipping(arg: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.losses import KullbackLeibler, LogProb
        from pixyz.losses import Expectation as E
        from pixyz.models import Model

        q, p, prior, x = vae_parts()
        loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
        m = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 1.0},
                  **{arg: -0.01})
        before = [t.detach().clone() for t in p.parameters()]
        m.train({"x": x})
        return [(b - a.detach()) for a, b in zip(p.parameters(), before)]  # the step taken, lr = 1

    return program


@pytest.mark.parametrize("arg", ["clip_grad_norm", "clip_grad_value"])
def test_negative_clipping_is_refused_where_pixyz_climbs(arg: str) -> None:
    steps = run_pixyz(prog_negative_clipping(arg))
    if arg == "clip_grad_value":  # torch's clamp(min=0.01, max=-0.01) is -0.01 everywhere: not a descent step
        for s in steps:
            torch.testing.assert_close(s, torch.full_like(s, -0.01))
    from pyro_dgm.models.errors import ModelArgumentError

    with renamed_import(), pytest.raises(ModelArgumentError, match=f"Model: {arg} must be positive"):
        prog_negative_clipping(arg)()


@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
@pytest.mark.parametrize("temperature", [0.0, -0.5])
def test_a_relaxed_familys_temperature_must_be_positive(family: str, temperature: float) -> None:
    import pyro_dgm.distributions as ours

    with pytest.raises(ValueError, match=rf"{family} p\(x\): temperature must be positive, got {temperature}"):
        getattr(ours, family)(temperature=temperature, probs=torch.tensor([0.3, 0.7]), var=["x"])
    # a positive one still builds, and a temperature named by a cond_var is the network's to give
    getattr(ours, family)(temperature=0.5, probs=torch.tensor([0.3, 0.7]), var=["x"])
    getattr(ours, family)(temperature="t", probs=torch.tensor([0.3, 0.7]), var=["x"], cond_var=["t"])


@pytest.mark.parametrize("weights", [[0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [1.0, float("nan"), 1.0]])
def test_product_of_normal_weights_must_be_non_negative_and_not_all_zero(weights: list[float]) -> None:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    experts = [Normal(loc="x", scale=torch.tensor(1.0), var=["z"], cond_var=["x"], name=n) for n in ("a", "b")]
    with pytest.raises(ValueError, match="weight_modalities must be non-negative and not all 0"):
        ProductOfNormal(experts, weight_modalities=weights)
    q = ProductOfNormal(experts, weight_modalities=[0.0, 1.0, 1.0])  # the prior left out: a valid product
    scale = q.get_params({"x": torch.ones(1, 1)})["scale"]  # two experts of precision 1: scale 1/sqrt(2)
    torch.testing.assert_close(scale.flatten(), torch.tensor([0.5 ** 0.5]))


def test_an_unknown_kernel_parameter_of_mmd_warns() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import MMD

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
    q = Normal(loc=torch.ones(2), scale=torch.ones(2), var=["z"], name="q")
    with pytest.warns(UserWarning, match="takes sigma_sqr; 'sigma' is ignored"):
        MMD(p, q, kernel="gaussian", sigma=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MMD(p, q, kernel="gaussian", sigma_sqr=4.0)


# ------------------------------------------------------------------------------------------------ clear errors
def test_optimizer_errors_name_the_model_and_keep_torchs_type() -> None:
    from pyro_dgm.losses import KullbackLeibler
    from pyro_dgm.models import Model

    with renamed_import():
        q, _, prior, _ = vae_parts()
    loss = KullbackLeibler(q, prior).mean()
    cases = [(torch.nn.Linear, {}, TypeError, "missing 1 required"),
             (torch.optim.Adam, {"lr": 0.1, "foo": 1}, TypeError, "unexpected keyword argument 'foo'"),
             (torch.optim.Adam, {"lr": "0.1"}, TypeError, "not supported"),
             (torch.optim.Adam, {"lr": -1.0}, ValueError, "Invalid learning rate")]
    for optimizer, params, kind, torch_says in cases:
        with pytest.raises(kind, match=rf"Model: cannot build the optimizer .* with optimizer_params=.*{torch_says}"):
            Model(loss, distributions=[q], optimizer=optimizer, optimizer_params=params)
    with pytest.raises(TypeError, match="Model: retain_graph must be a bool, got 'no'"):
        Model(loss, distributions=[q], retain_graph="no")
    for ok in (True, 1, None):  # as under Pixyz
        Model(loss, distributions=[q], retain_graph=ok)


def test_constructor_and_callback_errors_name_the_distribution_or_loss() -> None:
    from pyro_dgm.distributions import CustomProb, Deterministic, ElementWiseProductOfNormal, Normal
    from pyro_dgm.losses import WassersteinDistance

    expert = Normal(loc="x", scale=torch.tensor(1.0), var=["z"], cond_var=["x"], name="e")
    with pytest.raises(TypeError, match="ElementWiseProductOfNormal p: p must be one pyro_dgm distribution"):
        ElementWiseProductOfNormal([expert])
    p = CustomProb(lambda z: 1.5, var=["z"])
    with pytest.raises(TypeError, match=r"CustomProb p\(z\): log_prob_function must return a tensor .* got float"):
        p.get_log_prob({"z": torch.ones(2, 3)})
    with pytest.raises(TypeError, match=r"Deterministic p \(var=\['y'\]\): .*unexpected keyword argument 'foo'"):
        Deterministic(var=["y"], cond_var=["x"], foo=3)
    a = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="a")
    with pytest.raises(TypeError, match="WassersteinDistance: metric must be a callable"):
        WassersteinDistance(a, expert, metric="l2")
