"""Probes p117, p118 and p119 on the losses and the models.

p117: a failed training step (``Model.train``, and the discriminator's step ``AdversarialLoss.loss_train``) puts back
the buffers of a batch norm added to a network after the first step, and of a plain network a user's loss holds.
p118: a constant's text after ``loss.double()``, constants of several values in sympy's arithmetic, and Pixyz's
settable ``IterativeLoss.timpstep_symbol``. p119: ``IterativeLoss``'s name arguments and the models'
``optimizer_params`` that are not what they should be raise errors naming the class, the argument and what was
expected.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import sympy
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.flows import AffineCoupling, BatchNorm1d, FlowList
from pyro_dgm.distributions import InverseTransformedDistribution
from pyro_dgm.losses import IterativeLoss, KullbackLeibler, Loss, Parameter, ValueLoss
from pyro_dgm.losses import Expectation as E
from pyro_dgm.losses.special import LossArgumentError
from pyro_dgm.models import GAN, Model
from pyro_dgm.models.errors import ModelArgumentError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm  # noqa: E402


class _Interrupted(KeyboardInterrupt):
    """The Ctrl-C a test injects."""


def _raise_after(layer: nn.Module) -> Any:
    """A hook that makes ``layer``'s next forward raise after it ran (a Ctrl-C once the batch norm moved its
    statistics); returns its handle."""
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        raise _Interrupted("injected")

    return layer.register_forward_hook(hook)


def _fails_and_keeps(train: Callable[[], Any], bn: nn.Module, layer: nn.Module | None = None) -> None:
    """``train()`` fails (a Ctrl-C right after ``layer``, by default the batch norm, ran) and leaves ``bn``'s state as
    it was before."""
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    handle = _raise_after(layer if layer is not None else bn)
    _check_kept(train, bn, before, handle)


def _check_kept(train: Callable[[], Any], bn: nn.Module, before: dict[str, torch.Tensor], handle: Any) -> None:
    try:
        with pytest.raises(_Interrupted):
            train()
    finally:
        handle.remove()
    after = bn.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed by the failed step: {v.tolist()} -> {after[k].tolist()}"


# ------------------------------------------------------------------------------------- p117: buffers put back
class _ScaleTranslate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        return torch.tanh(h[..., :2]), h[..., 2:]


class _Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(2, 2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(x), "scale": torch.ones_like(x)}


class _Decoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(z), "scale": torch.ones_like(z)}


def _data(n: int = 8) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(n, 2) * 3 + 1}


class _Armed(Normal):
    """r(y|x), scored after the flow's term; its network raises a Ctrl-C when ``armed`` (a flow's batch norm runs no
    forward hook of its own)."""

    armed = False

    def __init__(self) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="r")
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.armed:
            raise _Interrupted("injected")
        return {"loc": self.fc(x), "scale": torch.ones_like(x)}


class _Disarm:
    def __init__(self, r: _Armed) -> None:
        self.r = r

    def remove(self) -> None:
        self.r.armed = False


def _flow_model() -> tuple[Model, Callable[[nn.Module], None], _Armed]:
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    f = FlowList([AffineCoupling(2, mask_type="channel_wise", scale_translate_net=_ScaleTranslate(),
                                 inverse_mask=False)])
    p = InverseTransformedDistribution(prior, f, var=["x"])
    r = _Armed()
    model = Model(-p.log_prob().mean() - r.log_prob().mean(), distributions=[p, r], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": 0.1})
    return model, f.flow_list.append, r


def _vae_model(insert: bool) -> tuple[Model, Callable[[nn.Module], None]]:
    q, p = _Encoder(), _Decoder()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="prior")
    model = Model((KullbackLeibler(q, prior) - E(q, p.log_prob())).mean(), distributions=[q, p],
                  optimizer=torch.optim.Adam, optimizer_params={"lr": 0.1})
    if insert:  # (nn.Sequential.insert registers nothing: torch's registration hooks do not see it)
        return model, lambda layer: q.net.insert(0, layer)
    return model, q.net.append


@pytest.mark.parametrize("case", ["Sequential.append", "Sequential.insert"])
def test_a_batch_norm_added_to_a_network_after_the_first_step_is_put_back_by_a_failed_step(case: str) -> None:
    torch.manual_seed(0)
    model, add = _vae_model(case == "Sequential.insert")
    model.train(_data())
    bn = nn.BatchNorm1d(2, momentum=0.5)
    add(bn)
    model.train(_data())  # (the batch norm's statistics move: the step succeeded)
    assert bn.running_mean.abs().sum() > 0
    _fails_and_keeps(lambda: model.train(_data()), bn)


def test_a_batch_norm_appended_to_a_flow_list_after_the_first_step_is_put_back_by_a_failed_step() -> None:
    torch.manual_seed(0)
    model, add, r = _flow_model()
    data = lambda: {**_data(), "y": torch.randn(8, 2)}  # noqa: E731
    model.train(data())
    bn = BatchNorm1d(2, momentum=0.5)
    add(bn)
    model.train(data())
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    assert before["running_mean"].abs().sum() > 0
    r.armed = True
    _check_kept(lambda: model.train(data()), bn, before, _Disarm(r))


class _Critic(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"t": self.net(x)}


class _Generator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(4, 2)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.net(z)}


def test_a_batch_norm_inserted_in_the_discriminator_is_put_back_by_a_failed_discriminator_step() -> None:
    torch.manual_seed(0)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    d = _Critic()
    model = GAN((_Generator() * prior).marginalize_var("z"), d, optimizer_params={"lr": 1e-2},
                d_optimizer_params={"lr": 1e-2})
    term = model.adversarial_loss
    g = torch.Generator().manual_seed(5)
    term.loss_train({"x": torch.randn(8, 2, generator=g) + 3})
    bn = nn.BatchNorm1d(2, momentum=0.5)
    d.net.insert(0, bn)
    term.loss_train({"x": torch.randn(8, 2, generator=g) + 3})
    assert bn.running_mean.abs().sum() > 0
    _fails_and_keeps(lambda: term.loss_train({"x": torch.randn(8, 2, generator=g) * 10}), bn)


class _FeatureLoss(Loss):
    """A user's loss that holds a plain feature network (not a distribution) and calls it itself."""

    def __init__(self, p: Normal, feature: nn.Module) -> None:
        super().__init__(["x", "y"])
        self.p = p
        self.feature = feature

    @property
    def _symbol(self) -> Any:
        return sympy.Symbol("L")

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        h = self.feature(x_dict["x"])
        return -self.p.get_log_prob(x_dict).mean() + h.pow(2).mean() * 0, {}


def test_a_plain_network_a_loss_holds_is_put_back_by_a_failed_step() -> None:
    torch.manual_seed(0)
    p = Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="p")
    p.fc = nn.Linear(2, 2)
    feature = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    model = Model(_FeatureLoss(p, feature), distributions=[p.fc], optimizer=torch.optim.Adam)
    data = {"x": torch.randn(6, 2) * 2 + 3, "y": torch.randn(6, 2)}
    model.train(data)
    assert feature[1].running_mean.abs().sum() > 0
    _fails_and_keeps(lambda: model.train({"x": torch.randn(6, 2) * 5, "y": torch.randn(6, 2)}), feature[1],
                     feature[2])
    assert feature[1].training  # (its mode is the user's: a failed step changes no mode)


# ------------------------------------------------------------------------------------------- p118: constants' text
def _scaled_kl_double() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, ValueLoss

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
    loss = (0.1 * KullbackLeibler(q, p) + 0.3).mean()
    before = str(loss)
    loss.double()
    v = ValueLoss(0.2).to(torch.float64)
    h = ValueLoss(0.1).half().double()
    return before, str(loss), str(v), float(v.eval()), str(h)


def test_a_constant_cast_to_another_dtype_prints_the_number_given_as_pixyz() -> None:
    ref, ours = run_both(_scaled_kl_double)
    assert_same(ref, ours)
    assert ours[1] == r"mean \left(0.1 D_{KL} \left[q(z|x)||p(z) \right] + 0.3 \right)"


def test_a_constant_changed_in_place_after_a_cast_prints_its_new_value() -> None:
    v = ValueLoss(0.1).double()
    v.value.fill_(0.25)  # (porting.md: a constant changed in place prints its new value)
    assert str(v) == "0.25"


def _kl() -> Any:
    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
    return KullbackLeibler(q, p)


def test_two_vector_constants_are_not_merged_by_sympy() -> None:
    a, b = ValueLoss(torch.tensor([1., 2.])), ValueLoss(torch.tensor([3., 4.]))
    diff = a - b
    torch.testing.assert_close(diff.eval(), torch.tensor([-2., -2.]))
    assert str(diff) == r"\mathtt{\text{[1. 2.]}} - \mathtt{\text{[3. 4.]}}"  # (was 0: c - c)
    product = str(a * b * _kl())
    assert "^{2}" not in product and r"\text{[1. 2.]}" in product and r"\text{[3. 4.]}" in product
    with_parameter = str(a * _kl() + Parameter("c") * _kl())  # (was 2 D_KL c: merged with the parameter)
    assert with_parameter.startswith(r"\mathtt{\text{[1. 2.]}} D_{KL}") and with_parameter.endswith(" c")
    same_values = ValueLoss(torch.tensor([1., 2.]))
    assert str(a - same_values) == r"\mathtt{\text{[1. 2.]}} - \mathtt{\text{[1. 2.]}}"


def test_a_vector_constant_prints_its_values_as_pixyz_prints_them_given_as_an_array() -> None:
    def as_array() -> Any:
        import numpy as np
        from pixyz.losses import ValueLoss

        return str(ValueLoss(np.array([0.5, 2.0, -1.0])))

    ours = str(ValueLoss(torch.tensor([0.5, 2.0, -1.0])))
    assert ours == run_pixyz(as_array) == run_pyro_dgm(as_array)
    long = str(ValueLoss(torch.arange(20.)))  # summarized, on one line
    assert long == r"\mathtt{\text{[ 0.  1.  2. ... 17. 18. 19.]}}"
    assert str(ValueLoss(torch.eye(2))) == r"\mathtt{\text{[[1. 0.] [0. 1.]]}}"
    assert np.array_equal(ValueLoss(torch.eye(2)).eval().numpy(), np.eye(2, dtype=np.float32))


def _timestep_symbol_set() -> Any:
    import sympy
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss, KullbackLeibler, Parameter

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
    it = IterativeLoss(KullbackLeibler(q, p), series_var=["x"])
    default = (str(it), str(it.timpstep_symbol))
    it.timpstep_symbol = sympy.Symbol("s")
    fixed = IterativeLoss(KullbackLeibler(q, p) * Parameter("k"), max_iter=3, series_var=["x"], timestep_var=["k"])
    fixed.timpstep_symbol = sympy.Symbol("j")
    x = torch.randn(3, 2, 1)
    return default, str(it), str(it.timpstep_symbol), str(fixed), it.eval({"x": x}), fixed.eval({"x": x})


def test_timpstep_symbol_is_settable_and_names_the_sums_index_as_in_pixyz() -> None:
    ref, ours = run_both(_timestep_symbol_set)
    assert_same(ref, ours)
    assert ours[1] == r"\sum_{s=0}^{s_{max} - 1} D_{KL} \left[q(z|x)||p(z) \right]"


def test_timpstep_symbol_refuses_what_is_no_symbol() -> None:
    it = IterativeLoss(_kl(), series_var=["x"])
    with pytest.raises(LossArgumentError, match=r"IterativeLoss: timpstep_symbol must be a sympy Symbol.*got int 3"):
        it.timpstep_symbol = 3
    it.timpstep_symbol = "u"  # (a name: the symbol sympy makes of it)
    assert it.latex.startswith(r"\sum_{u=0}^{u_{max} - 1}")


# ------------------------------------------------------------------------------- p119: arguments of the wrong type
@pytest.mark.parametrize("arg, value", [("series_var", 3), ("series_var", torch.tensor([0, 1])),
                                        ("series_var", [["x"]]), ("timestep_var", 3), ("timestep_var", [1]),
                                        ("input_var", 3)])
def test_iterative_loss_names_an_argument_that_is_no_list_of_names(arg: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"series_var": ["x"], arg: value}
    with pytest.raises(LossArgumentError) as info:
        IterativeLoss(_kl(), **kwargs)
    message = str(info.value)
    assert message.startswith(f"IterativeLoss: {arg} must be a list of variable names"), message
    assert type(value).__name__ in message
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_iterative_loss_names_update_value_whose_names_are_not_strings() -> None:
    with pytest.raises(LossArgumentError, match=r"IterativeLoss: update_value must be a dict from the name"):
        IterativeLoss(_kl(), series_var=["x"], update_value={"z": ["x_prev"]})


def _iterative(series_var: Any, timestep_var: Any) -> Callable[[], Any]:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss, KullbackLeibler, Parameter

        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
        step = KullbackLeibler(q, p).mean()
        if timestep_var:  # (Pixyz's step loss must read it)
            step = step * Parameter(timestep_var[0])
        it = IterativeLoss(step, series_var=series_var, timestep_var=timestep_var)
        return str(it), it.input_var, it.eval({"x": torch.randn(4, 3, 2)})
    return program


@pytest.mark.parametrize("series_var, timestep_var", [(["x"], ()), (("x",), ["t"]), ("x", ("s",))])
def test_iterative_loss_takes_the_names_pixyz_takes(series_var: Any, timestep_var: Any) -> None:
    ref, ours = run_both(_iterative(series_var, timestep_var))
    assert_same(ref, ours)


def _model_with_optimizer_params(value: Any) -> Callable[[], Any]:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p")
        p.loc_net = torch.nn.Linear(1, 1)
        return Model((-LogProb(p)).mean(), distributions=[p.loc_net], optimizer_params=value)
    return program


@pytest.mark.parametrize("value", [1e-3, "lr=1e-3", 0])
def test_model_names_optimizer_params_that_is_no_mapping(value: Any) -> None:
    with pytest.raises(Exception) as ref:  # (Pixyz: torch's "argument after ** must be a mapping, not float")
        run_pixyz(_model_with_optimizer_params(value))
    with pytest.raises(ModelArgumentError) as ours:
        run_pyro_dgm(_model_with_optimizer_params(value))
    assert isinstance(ours.value, ref.type)
    assert str(ours.value).startswith(f"Model: optimizer_params must be a mapping of the optimizer's arguments "
                                      f"(e.g. {{'lr': 0.001}}), got {type(value).__name__}")


@pytest.mark.parametrize("value", [None, [("lr", 0.5)], {"lr": 0.5}])
def test_model_still_takes_none_and_pairs_as_optimizer_params(value: Any) -> None:
    model = run_pyro_dgm(_model_with_optimizer_params(value))
    assert model.optimizer.param_groups[0]["lr"] == (1e-3 if value is None else 0.5)


@pytest.mark.parametrize("arg", ["optimizer_params", "d_optimizer_params"])
def test_gan_names_its_optimizer_params_that_are_no_mapping(arg: str) -> None:
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    with pytest.raises(ModelArgumentError, match=rf"^GAN: {arg} must be a mapping of the optimizer's arguments .*"
                                                 r"got float 0.001"):
        GAN((_Generator() * prior).marginalize_var("z"), _Critic(), **{arg: 1e-3})
