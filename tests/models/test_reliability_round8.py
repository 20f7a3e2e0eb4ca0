"""The Model API, round 8: a Pixyz subclass that does not call ``Model.__init__``, and the buffers a failed step
replaced.

A Pixyz 0.3.3 ``Model`` is a plain object whose whole state is ``loss_cls``, ``test_loss_cls``, ``distributions``,
``optimizer``, ``clip_norm``, ``clip_value`` and ``retain_graph``: a subclass that set them itself trained under Pixyz
and raised ``AttributeError`` (``_dgm_pyro_named``, ``_dgm_compile``) here. pyro_dgm's own state is now made from
them at its first use.

A failed step (an error, Ctrl-C) put back the networks' persistent buffers only: a flow's ``BatchNorm1d`` kept the
failed batch's statistics (``batch_mean``/``batch_var``, non-persistent, None before the first step, assigned anew at
each training forward), so draws in training mode used them while draws in eval mode used the restored running
statistics. A buffer object that the step replaced is now put back.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, InverseTransformedDistribution, Normal
from pyro_dgm.flows import BatchNorm1d, FlowList, PlanarFlow
from pyro_dgm.losses import LogProb
from pyro_dgm.models import GAN, Model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm  # noqa: E402


# ----------------------------------------------------------------------------- F1.1: Model.__init__ not called
def _pixyz_p() -> Any:
    """p(x|z) = N(Linear(z), 1) of the library ``pixyz`` names in the calling program."""
    from pixyz.distributions import Normal as PixyzNormal

    class P(PixyzNormal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"loc": self.fc(z), "scale": torch.ones_like(z)}

    return P()


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"x": torch.randn(4, 2, generator=g), "z": torch.randn(4, 2, generator=g)}


def _fresh() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _data().items()}  # (Pixyz's cache would answer a second call with a used graph)


def _same_program(program: Any) -> None:
    assert_same(run_pixyz(program), run_pyro_dgm(program))


def test_a_pixyz_subclass_that_sets_the_attributes_itself_runs_as_under_pixyz() -> None:
    """Test, train (clipped by norm and value), print, save, load, set_loss: Pixyz's numbers; it raised
    AttributeError ('_dgm_compile') here."""
    def program() -> Any:
        import torch
        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = _pixyz_p()

        class Manual(Model):
            def __init__(self, p):  # type: ignore[no-untyped-def]
                self.loss_cls = self.test_loss_cls = (-LogProb(p)).mean()
                self.distributions = nn.ModuleList([p])
                self.optimizer = torch.optim.SGD(self.distributions.parameters(), lr=0.1)
                self.clip_norm, self.clip_value, self.retain_graph = 0.5, 0.3, False

        m = Manual(p)
        out = [m.test(_fresh())] + [m.train(_fresh()) for _ in range(3)] + [str(m)]
        path = os.path.join(tempfile.mkdtemp(), "m.pt")
        m.save(path)
        m.train(_fresh())
        m.load(path)
        out.append(m.test(_fresh()))
        m.set_loss((-LogProb(p)).sum())
        out += [m.train(_fresh()), m.test(_fresh()), [t.detach().clone() for t in p.parameters()]]
        return out

    _same_program(program)


@pytest.mark.parametrize("attributes", ["test_loss_cls", "loss_cls"])
def test_a_pixyz_subclass_that_sets_one_loss_only_runs_as_under_pixyz(attributes: str) -> None:
    """Only the test loss and the distributions (test() alone), or only the training loss (train() alone): Pixyz's
    numbers; both raised AttributeError here."""
    def program() -> Any:
        import torch
        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = _pixyz_p()

        class Manual(Model):
            def __init__(self, p):  # type: ignore[no-untyped-def]
                setattr(self, attributes, (-LogProb(p)).mean())
                self.distributions = nn.ModuleList([p])
                self.optimizer = torch.optim.Adam(p.parameters(), lr=0.1)
                self.clip_norm = self.clip_value = None
                self.retain_graph = False

        m = Manual(p)
        if attributes == "test_loss_cls":
            return [m.test(_fresh()), p.training]
        return [m.train(_fresh()) for _ in range(2)]

    _same_program(program)


def test_two_pixyz_subclass_models_of_one_distribution_run_as_under_pixyz() -> None:
    """Two such models sharing the distribution, each with its own optimizer, trained in turn."""
    def program() -> Any:
        import torch
        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = _pixyz_p()

        class Manual(Model):
            def __init__(self, p, lr):  # type: ignore[no-untyped-def]
                self.loss_cls = self.test_loss_cls = (-LogProb(p)).mean()
                self.distributions = nn.ModuleList([p])
                self.optimizer = torch.optim.SGD(self.distributions.parameters(), lr=lr)
                self.clip_norm = self.clip_value = None
                self.retain_graph = False

        a, b = Manual(p, 0.1), Manual(p, 0.01)
        return [a.train(_fresh()), b.train(_fresh()), a.train(_fresh()), b.test(_fresh())]

    _same_program(program)


class _P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(z), "scale": torch.ones_like(z)}


class _Manual(Model):
    def __init__(self, p: _P, loss: Any = None) -> None:
        self.loss_cls = self.test_loss_cls = (-LogProb(p)).mean() if loss is None else loss
        self.distributions = nn.ModuleList([p])
        self.optimizer = torch.optim.Adam(self.distributions.parameters(), lr=0.1)
        self.clip_norm = self.clip_value = None
        self.retain_graph = False


def _weights(model: Model) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.distributions.state_dict().values()]


def test_fit_and_a_resumed_checkpoint_of_a_pixyz_subclass_equal_the_model_built_by_init(tmp_path: Path) -> None:
    """What pyro_dgm adds (fit, its history, save and load(resume=True)) works on such a subclass, with the numbers
    of the same model built by Model.__init__."""
    data = {"x": torch.randn(24, 2, generator=torch.Generator().manual_seed(1)),
            "z": torch.randn(24, 2, generator=torch.Generator().manual_seed(2))}
    runs = []
    for init in (True, False):
        torch.manual_seed(0)
        p = _P()
        model = (Model((-LogProb(p)).mean(), distributions=[p], optimizer_params={"lr": 0.1}) if init
                 else _Manual(p))
        torch.manual_seed(1)
        history = model.fit(data, epochs=2, batch_size=8, progress=False)
        model.save(tmp_path / f"{init}.pt")
        torch.manual_seed(0)
        resumed = _Manual(_P())
        resumed.load(tmp_path / f"{init}.pt", resume=True)
        runs.append((history["train_loss"], model.step, model.epoch, _weights(model), resumed.step, resumed.epoch,
                     _weights(resumed), float(resumed.train(data))))
    assert_same(runs[0], runs[1])
    assert runs[1][1:3] == (6, 2) and runs[1][4:6] == (6, 2)


def test_a_pixyz_subclass_whose_loss_is_not_a_pyro_dgm_loss_is_told_so() -> None:
    """A loss_cls that is no pyro_dgm Loss: a TypeError naming the model and loss_cls (an AttributeError about
    '_dgm_pyro_named' before)."""
    model = _Manual(_P(), loss=lambda x: x)
    with pytest.raises(TypeError, match=r"_Manual: loss_cls must be a pyro_dgm Loss"):
        model.train(_data())


# ----------------------------------------------------------------------------- F1.2: buffers a failed step replaced
class _Interrupt(PlanarFlow):
    """A planar flow that raises Ctrl-C's KeyboardInterrupt once when armed (after the batch norm before it ran)."""

    armed = False

    def forward(self, x, y=None, compute_jacobian=True):  # type: ignore[no-untyped-def]
        if _Interrupt.armed:
            _Interrupt.armed = False
            raise KeyboardInterrupt("Ctrl-C")
        return super().forward(x, y, compute_jacobian)


def _flow_run(fault: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_prior")
    p = InverseTransformedDistribution(prior, FlowList([BatchNorm1d(2), _Interrupt(2)]), var=["x"])
    model = Model((-LogProb(p)).mean(), distributions=[p], optimizer_params={"lr": 1e-2})
    g = torch.Generator().manual_seed(1)
    good = [torch.randn(16, 2, generator=g) * 3 + 1 for _ in range(3)]
    model.train({"x": good[0]})
    if fault:
        _Interrupt.armed = True
        with pytest.raises(KeyboardInterrupt):
            model.train({"x": good[1] * 10 + 50})  # finite; interrupted after the batch norm saw it
    bn = p.flow.flow_list[0]
    out: dict[str, Any] = {"buffers": {n: b.clone() for n, b in bn.named_buffers()}}
    torch.manual_seed(6)
    out["sample in training mode"] = p.sample(batch_n=3)["x"]
    p.eval()
    torch.manual_seed(6)
    out["sample in eval mode"] = p.sample(batch_n=3)["x"]
    out["next steps"] = [model.train({"x": x}) for x in good[1:]]
    out["weights"] = _weights(model)
    return out


def test_a_failed_step_puts_back_a_flows_batch_statistics() -> None:
    """After Ctrl-C in the flow after a BatchNorm1d, draws in training mode used the failed batch's statistics
    (x of about 50 instead of about 1) while eval mode used the restored running ones; now both, the buffers and
    the next steps equal those of a twin that never saw the failed batch."""
    assert_same(_flow_run(False), _flow_run(True), rtol=0, atol=0)


class _Centre(nn.Module):
    """x minus the last training batch's mean, a non-persistent buffer assigned anew at each training forward (None
    before the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.mean = x.mean(0, keepdim=True).detach()
        return x - self.mean


class _D(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(_Centre(), nn.Linear(2, 1), nn.Sigmoid())

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


class _G(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(4, 2)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"x": self.net(z)}


def _gan_run(fault: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    d = _D()
    model = GAN((_G() * prior).marginalize_var("z"), d, optimizer_params={"lr": 1e-2},
                d_optimizer_params={"lr": 1e-2})
    term = model.adversarial_loss
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(8, 2, generator=g) + 3 for _ in range(3)]
    term.loss_train({"x": batches[0]})
    before = d.net[0].mean
    if fault:
        def interrupt(module: nn.Module, args: Any) -> None:  # after the centring layer assigned its buffer
            raise KeyboardInterrupt("Ctrl-C")

        handle = d.net[1].register_forward_pre_hook(interrupt)
        with pytest.raises(KeyboardInterrupt):
            term.loss_train({"x": batches[1] * 10})
        handle.remove()
    out = {"buffer kept": d.net[0].mean is before, "mean": d.net[0].mean.clone()}
    d.eval()
    out["scores in eval mode"] = d.sample({"x": batches[0]})["t"]  # (centred by the last training batch's mean)
    torch.manual_seed(7)
    out["next steps"] = [term.loss_train({"x": x}) for x in batches[1:]]
    out["weights"] = [t.detach().clone() for t in d.state_dict().values()]
    return out


def test_a_failed_discriminator_step_puts_back_a_replaced_buffer() -> None:
    """The adversarial terms' discriminator step (loss_train) puts back a non-persistent buffer the failed step
    assigned (it kept the failed batch's mean before), and goes on as a twin that never saw the failed batch."""
    assert_same(_gan_run(False), _gan_run(True), rtol=0, atol=0)
