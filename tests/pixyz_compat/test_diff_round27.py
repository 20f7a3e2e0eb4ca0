"""Twenty-seventh round: the Loss API's less-used corners (probe p100) and a GAN under ``torch.no_grad`` (probe
p99), under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- ``IterativeLoss(..., update_value={"x": "x_prev"})``, the series variable renamed onto a given input: the rename
  after step 0 was overwritten by the old ``x_prev`` (Pixyz keeps the later of two equal keys, and so did
  pyro_dgm), so step 1 read the initial ``x_prev``. Pixyz's number is wrong (the same model written with a copy
  ``h = x`` gives the true value in both); the renamed value wins now (docs/porting.md).
- ``ValueLoss`` of a tensor (``kl * beta`` with a tensor ``beta``) kept the tensor: a gradient reached it, it was not
  in the state dict, ``.double()`` did not move it and an int tensor stayed int. Pixyz copies it into a float32
  buffer ``value``; so does pyro_dgm now.
- Pixyz's private ``_inverse_g_loss`` (JS) and ``_clip_value`` (Wasserstein), which users set and subclasses read,
  were missing: setting them was silently ignored, reading them raised an ``AttributeError``.
- ``GAN.train`` (a discriminator's ``loss_train``) under ``torch.no_grad()`` raised torch's bare "element 0 of
  tensors does not require grad"; it says what is wrong and what to do now, as ``Model.train`` does.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pixyz, run_pyro_dgm


def _autoregressive(order: str, copy: bool) -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import IterativeLoss

    p = Normal(loc="x_prev", scale=torch.tensor(1.), var=["x"], cond_var=["x_prev"], features_shape=[2], name="p")
    x = torch.arange(12.).reshape(3, 2, 2) / 4  # T=3, B=2, D=2
    x0 = torch.zeros(2, 2)
    values = {"x": x, "x_prev": x0} if order == "series first" else {"x_prev": x0, "x": x}
    if not copy:
        return IterativeLoss(p.log_prob(), series_var=["x"], update_value={"x": "x_prev"}).eval(values)

    class Copy(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor) -> dict:
            return {"h": x}

    return IterativeLoss(p.log_prob().expectation(Copy()), series_var=["x"], update_value={"h": "x_prev"}).eval(values)


def _true_autoregressive_log_density() -> torch.Tensor:
    x = torch.arange(12.).reshape(3, 2, 2) / 4
    prev = [torch.zeros(2, 2), x[0], x[1]]
    return sum(torch.distributions.Normal(a, 1.).log_prob(b).sum(-1) for a, b in zip(prev, x))


@pytest.mark.parametrize("order", ["series first", "given state first"])
def test_update_value_onto_a_given_input_carries_the_step_value(order: str) -> None:
    ref, ours = run_both(lambda: _autoregressive(order, copy=False))
    truth = _true_autoregressive_log_density()
    assert torch.allclose(ours, truth, atol=1e-5)  # was Pixyz's [-7.83, -9.58]
    assert not torch.allclose(ref, truth, atol=1e-2)  # Pixyz loses the first update
    assert torch.allclose(run_pixyz(lambda: _autoregressive(order, copy=True)), truth, atol=1e-5)  # its copy form


def _value_loss_of_a_tensor() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, ValueLoss

    q = Normal(loc=torch.tensor(0.3), scale=torch.tensor(1.2), var=["z"], features_shape=[2], name="q")
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    beta = torch.tensor(0.5, requires_grad=True)
    loss = KullbackLeibler(q, p) * ValueLoss(beta)
    value = loss.eval({})
    beta.data.fill_(2.0)  # a later in-place change of the tensor: Pixyz's copy does not see it
    after = loss.eval({})
    keys = sorted(loss.state_dict())
    int_value = ValueLoss(torch.tensor(2)).eval({})
    doubled = ValueLoss(torch.tensor(0.1)).double().value
    return value, value.requires_grad, after, keys, int_value, int_value.dtype, doubled


def test_a_value_loss_of_a_tensor_is_a_float32_buffer_copy() -> None:
    with pytest.warns(UserWarning):  # (Pixyz's torch.tensor(tensor) warns)
        ref, ours = run_both(_value_loss_of_a_tensor)
    assert not ours[1] and ours[5] == torch.float32  # was: a gradient and int64
    assert "loss2.value" in ours[3]
    assert_same(ref, ours)


def test_a_tensor_in_loss_arithmetic_is_kept_as_given() -> None:
    """``loss * w`` with a tensor ``w`` is pyro_dgm's extension (Pixyz refuses it): the tensor is used as it is,
    its gradient, dtype and later in-place changes included."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import KullbackLeibler

    q = Normal(loc=torch.tensor(0.3), scale=torch.tensor(1.2), var=["z"], features_shape=[2], name="q")
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    beta = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    kl = KullbackLeibler(q, p)
    loss = kl * beta
    loss.eval({}).sum().backward()
    assert torch.allclose(beta.grad, kl.eval({}).sum().double())
    with torch.no_grad():
        beta.fill_(2.0)
    assert torch.allclose(loss.eval({}), 2.0 * kl.eval({}))
    assert not [k for k in loss.state_dict() if k.endswith("value")]


def _linear(var: str, cond: str, n_in: int, n_out: int, squash: bool = False) -> Any:
    """A ``Deterministic`` of the library the harness runs: ``var = Linear(cond)``, through a sigmoid when
    ``squash`` (a generator ``p``, or a critic or discriminator ``d`` when ``var`` is ``t``)."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic

    class Linear(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=[var], cond_var=[cond], name="d" if var == "t" else "p")
            self.model = nn.Linear(n_in, n_out)

        def forward(self, **inputs: torch.Tensor) -> dict:
            h = self.model(inputs[cond])
            return {var: torch.sigmoid(h) if squash else h}

    return Linear()


def _adversarial_private_attributes() -> Any:
    import torch

    from pixyz.distributions import EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialJensenShannon, AdversarialWassersteinDistance

    class MyJS(AdversarialJensenShannon):
        def g_loss(self, y_p: Any, y_q: Any, batch_n: Any) -> Any:
            return (1. if self._inverse_g_loss else -1.) * super().g_loss(y_p, y_q, batch_n)

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    p = (_linear("x", "z", 2, 3) * prior).marginalize_var("z")
    data = {"x": torch.randn(4, 3)}
    js = AdversarialJensenShannon(p, EmpiricalDistribution(["x"]), _linear("t", "x", 3, 1, squash=True))
    js._inverse_g_loss = False
    torch.manual_seed(1)
    switched = js.eval(data).detach()
    torch.manual_seed(1)
    built = AdversarialJensenShannon(p, EmpiricalDistribution(["x"]), js.d, inverse_g_loss=False).eval(data).detach()
    w = AdversarialWassersteinDistance(p, EmpiricalDistribution(["x"]), _linear("t", "x", 3, 1, squash=True),
                                       clip_value=0.5)
    w._clip_value = 0.001
    w.loss_train(data)
    torch.manual_seed(1)
    sub = MyJS(p, EmpiricalDistribution(["x"]), _linear("t", "x", 3, 1, squash=True)).eval(data).detach()
    return switched, built, w.d.model.weight.abs().max().detach(), sub, w._clip_value


def test_pixyz_private_attributes_of_the_adversarial_terms() -> None:
    ref, ours = run_both(_adversarial_private_attributes)
    assert torch.equal(ours[0], ours[1])  # was: the switch ignored
    assert float(ours[2]) <= 0.001 + 1e-9  # was: clipped at 0.5
    assert_same(ref, ours)


def _gan_train_under_no_grad() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.models import GAN

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    gan = GAN((_linear("x", "z", 2, 3, squash=True) * prior).marginalize_var("z"), _linear("t", "x", 3, 1, squash=True))
    with torch.no_grad():
        gan.train({"x": torch.rand(4, 3)})


def test_gan_train_under_no_grad_says_what_to_do() -> None:
    ref, ours = raises_same(_gan_train_under_no_grad)
    assert issubclass(ours, ref)
    with pytest.raises(RuntimeError, match=r"AdversarialJensenShannon.loss_train .*under torch.no_grad\(\).*call it "
                                           r"\(or GAN.train / Model.train\) outside it"):
        run_pyro_dgm(_gan_train_under_no_grad)


def _two_values_renamed_to_one(update_value: dict) -> Any:
    import torch

    from pixyz.distributions import Deterministic
    from pixyz.losses import Expectation, IterativeLoss, Parameter

    class F(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["a", "b"], cond_var=["c"], name="f")

        def forward(self, c: torch.Tensor) -> dict:
            return {"a": c + 1, "b": c + 100}

    loss = IterativeLoss(Expectation(F(), Parameter("c")), max_iter=3, update_value=update_value)
    return loss.eval({"c": torch.zeros(1)}, return_dict=True)


@pytest.mark.parametrize("update_value", [{"a": "c", "b": "c"}, {"b": "c", "a": "c"}], ids=["a-b", "b-a"])
def test_two_values_renamed_to_one_name_keep_pixyzs_choice(update_value: dict) -> None:
    """The later of the step's values wins, as in Pixyz (p101: the first fix took the later key of update_value)."""
    ref, ours = run_both(lambda: _two_values_renamed_to_one(update_value))
    assert float(ours[0]) == 300.0
    assert_same(ref, ours)


def _clip_value_set_later(value: float) -> Any:
    import torch

    from pixyz.distributions import EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialWassersteinDistance

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[3])
    w = AdversarialWassersteinDistance(p, EmpiricalDistribution(["x"]), _linear("t", "x", 3, 1), clip_value=0.5)
    before = w.d.model.weight.detach().clone()
    try:
        w._clip_value = value
    except ValueError:
        return "refused", torch.equal(before, w.d.model.weight), w._clip_value
    w.loss_train({"x": torch.randn(4, 3)})
    return "set", w.d.model.weight.abs().max().detach(), w._clip_value


def test_clip_value_set_later_is_checked_as_when_built() -> None:
    """A positive bound set later clips as Pixyz's does; one the constructor refuses (porting.md: every critic weight
    would be clamped to it) is refused when set later too (p101: the first alias wrote it unchecked)."""
    ref, ours = run_both(lambda: _clip_value_set_later(0.001))
    assert_same(ref, ours)
    assert run_pyro_dgm(lambda: _clip_value_set_later(-0.01)) == ("refused", True, 0.5)
    assert run_pixyz(lambda: _clip_value_set_later(-0.01))[0] == "set"


def _wasserstein_subclass_reading_inverse_g_loss() -> Any:
    import torch

    from pixyz.distributions import EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialWassersteinDistance

    class MyW(AdversarialWassersteinDistance):
        def g_loss(self, y_p: Any, y_q: Any, *args: Any, **kwargs: Any) -> Any:
            sign = 1. if self._inverse_g_loss else -1.
            return sign * super().g_loss(y_p, y_q, *args, **kwargs)

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[3])
    data = {"x": torch.randn(4, 3)}
    return [MyW(p, EmpiricalDistribution(["x"]), _linear("t", "x", 3, 1), inverse_g_loss=flag).eval(data).detach()
            for flag in (True, False)]


def test_a_wasserstein_subclass_reads_inverse_g_loss() -> None:
    ref, ours = run_both(_wasserstein_subclass_reading_inverse_g_loss)  # (p101: an AttributeError here)
    assert_same(ref, ours)


def _a_subclass_keeping_its_own_clip_value(own: Any) -> Any:
    import torch

    from pixyz.distributions import EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialWassersteinDistance

    class G(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"loc": self.fc(z), "scale": torch.ones(2)}

    class MyWGAN(AdversarialWassersteinDistance):
        def __init__(self, *args: Any, final_clip: Any = 0.5, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.clip_value = final_clip  # the subclass's own setting (a schedule it applies itself)

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    d = _linear("t", "x", 2, 1)
    loss = MyWGAN(EmpiricalDistribution(["x"]), (G() * prior).marginalize_var("z"), d, clip_value=0.01,
                  final_clip=own)
    loss.loss_train({"x": torch.randn(8, 2) * 3})
    return d.model.weight.detach().clone(), loss.clip_value


@pytest.mark.parametrize("own", [0.5, "linear"])
def test_a_subclass_keeps_its_own_clip_value(own: Any) -> None:
    """Pixyz clips with ``_clip_value``; a subclass's own ``clip_value`` (a name Pixyz's class lacks) is its own
    (p102: it set the clipping, 0.38 where Pixyz clamps to 0.01, and ``"linear"`` was refused)."""
    ref, ours = run_both(lambda: _a_subclass_keeping_its_own_clip_value(own))
    assert float(ours[0].abs().max()) <= 0.01 + 1e-9
    assert_same(ref, ours)
