"""Fifteenth round: ``Model`` subclasses and optimizers changed after the model is built, and the attack on the
fourteenth round's fixes, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- Gradient clipping read the parameters the model had when it was built: a network appended to
  ``model.distributions`` (or the list replaced) was not clipped, and the clip factor of the others left it out
  (an update of norm 16.3 for ``clip_grad_norm=0.1``). Pixyz clips ``self.distributions.parameters()`` at each step.
- The check of non-finite gradients (which keeps the weights when a gradient is NaN) missed parameters added to the
  optimizer later (``add_param_group``): their weights became NaN silently.
- ``Model.__init__`` set ``history``, ``epoch``, ``last_terms``... on the instance (for ``fit``): a subclass that set
  one before ``super().__init__()``, or defined one as a method or a read-only property, lost it or failed.
- An optimizer "class" that is any callable returning an object with ``step`` and ``zero_grad`` was refused.
- The error notes of the last round: a network's own ``TypeError`` about "multiple values for argument" or about an
  operand was reported as a naming problem of the variables.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, renamed_import, run_both
from pixyz_parts import scalar_decoder


class PlainSGD:
    """An optimizer that is no ``torch.optim.Optimizer``: it only steps and zeroes gradients (Pixyz takes any)."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        self.params, self.lr = list(params), lr

    def zero_grad(self) -> None:
        for q in self.params:
            q.grad = None

    def step(self) -> None:
        with torch.no_grad():
            for q in self.params:
                if q.grad is not None:
                    q -= self.lr * q.grad


def _two_decoders_program(change: str, bad: bool = False) -> Any:
    """A model built on one decoder ``p1``, a second ``p2`` joining it afterwards: appended to
    ``model.distributions`` (and to the optimizer), the list replaced (and the optimizer), or only added to the
    optimizer. SGD with lr 1 and ``clip_grad_norm=0.1``: the update is the clipped gradient. With ``bad``, ``p2``'s
    gradient is NaN while the loss is finite."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.models import Model

        class P(Normal):
            def __init__(self, name: str, nan_grad: bool = False) -> None:
                super().__init__(var=["x"], cond_var=["c"], name=name)
                self.fc = nn.Linear(1, 1)
                self.nan_grad = nan_grad

            def forward(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
                loc = self.fc(c)
                if self.nan_grad:  # a finite value whose gradient is NaN (d sqrt(u)/du at 0, times 0)
                    loc = loc + 0 * torch.sqrt(self.fc.weight * 0).sum()
                return {"loc": loc, "scale": torch.ones_like(c)}
        p1, p2 = P("p1"), P("p2", nan_grad=bad)
        model = Model((-LogProb(p1) - LogProb(p2)).mean(), distributions=[p1], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 1.0}, clip_grad_norm=None if bad else 0.1)
        if change == "append":
            model.distributions.append(p2)
            model.optimizer.add_param_group({"params": list(p2.parameters())})
        elif change == "setitem":  # p2 takes p1's place in the list (the optimizer unchanged): p2's gradient is
            model.distributions[0] = p2  # the one clipped, where p1's, which the optimizer steps, no longer is
        elif change == "replace":
            model.distributions = nn.ModuleList([p1, p2])
            model.optimizer = torch.optim.SGD(model.distributions.parameters(), lr=1.0)
        else:
            model.optimizer.add_param_group({"params": list(p2.parameters())})
        data = {"x": torch.full((4, 1), 10.0), "c": torch.ones(4, 1)}
        before = [t.detach().clone() for t in (*p1.parameters(), *p2.parameters())]
        try:
            loss = model.train({k: v.clone() for k, v in data.items()})
        except Exception as e:  # pyro_dgm's NonFiniteGradientError
            if type(e).__name__ != "NonFiniteGradientError":
                raise
            return {"raised": type(e).__name__, "unchanged": all(
                torch.equal(a, b) for a, b in zip(before, (*p1.parameters(), *p2.parameters())))}
        after = [t.detach().clone() for t in (*p1.parameters(), *p2.parameters())]
        update = torch.stack([(a - b).norm() for a, b in zip(after, before)]).norm()
        return {"loss": loss.detach(), "update_norm": update, "after": after}
    return program


@pytest.mark.parametrize("change", ["append", "replace", "setitem"])
def test_a_network_joining_the_distributions_after_the_model_is_built_is_clipped(change: str) -> None:
    ref, ours = run_both(_two_decoders_program(change))
    assert_same(ref, ours)
    if change != "setitem":
        assert float(ours["update_norm"]) <= 0.1 + 1e-6  # the clipped gradient's norm, with lr 1


@pytest.mark.parametrize("change", ["append", "optimizer only"])
def test_a_nan_gradient_of_a_parameter_added_later_keeps_the_weights(change: str) -> None:
    """Pixyz steps into NaN weights; ours raises before the optimizer steps (porting.md), also for a parameter
    that reached the optimizer after the model was built."""
    from pixyz_harness import run_pixyz, run_pyro_dgm

    ref = run_pixyz(_two_decoders_program(change, bad=True))
    assert bool(torch.isnan(ref["after"][2]).all())  # Pixyz: p2's weight is NaN
    assert run_pyro_dgm(_two_decoders_program(change, bad=True)) == {"raised": "NonFiniteGradientError",
                                                                     "unchanged": True}


def test_a_subclass_keeps_its_own_attributes_named_as_the_models() -> None:
    def program() -> Any:
        import torch

        from pixyz.losses import LogProb
        from pixyz.models import Model

        class Before(Model):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.history = []
                self.epoch = 10
                super().__init__(*args, **kwargs)

        class Methods(Model):
            def history(self) -> str:  # type: ignore[override]
                return "my history"

            @property
            def epoch(self) -> int:  # type: ignore[override]
                return 7

        p = scalar_decoder()
        args = ((-LogProb(p)).mean(),)
        kw = {"distributions": [p], "optimizer": torch.optim.SGD, "optimizer_params": {"lr": 0.1}}
        a, b = Before(*args, **kw), Methods(*args, **kw)
        a.history.append(1.5)
        loss = a.train({"x": torch.ones(2, 1), "c": torch.ones(2, 1)})
        return a.history, a.epoch, b.history(), b.epoch, loss.detach()
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_an_optimizer_factory_returning_any_object_that_steps() -> None:
    def program() -> Any:
        import torch

        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = scalar_decoder()
        model = Model((-LogProb(p)).mean(), distributions=[p], optimizer=PlainSGD, optimizer_params={"lr": 0.1})
        g = torch.Generator().manual_seed(0)
        return [model.train({"x": torch.randn(4, 1, generator=g), "c": torch.ones(4, 1)}).detach()
                for _ in range(3)]
    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("bug", ["a helper called with an argument twice", "an operand of None"])
def test_a_networks_own_type_error_keeps_its_message(bug: str) -> None:
    """The notes of round 14 (a variable named as the network call's argument; a list given for a tensor) must not
    take over a network's own ``TypeError``, here with a Python number among the inputs."""
    from pixyz_harness import run_pixyz, run_pyro_dgm

    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        def helper(x: torch.Tensor, **kw: Any) -> torch.Tensor:
            return x

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x", "beta"], name="p")

            def forward(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
                if bug == "an operand of None":
                    return {"loc": torch.ones_like(x) + None, "scale": torch.ones_like(x) * beta}
                return {"loc": helper(x, x=x), "scale": torch.ones_like(x) * beta}
        return P().sample({"x": torch.zeros(2, 1), "beta": 0.5})
    texts = []
    for run in (run_pixyz, run_pyro_dgm):
        with pytest.raises(TypeError) as info:
            run(program)
        texts.append(str(info.value))
    assert texts[0] == texts[1]


def test_model_test_puts_every_distribution_of_the_test_loss_in_eval_mode_for_the_call() -> None:
    """porting.md: Pixyz's ``test`` sets only ``self.distributions`` to eval mode; ours every distribution the test
    loss holds, for the call (a teacher with dropout gives the same test loss each time, that of dropout off), and a
    distribution not trained gets its mode back."""
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class P(Normal):
        def __init__(self, name: str, dropout: float) -> None:
            super().__init__(var=["x"], cond_var=["c"], name=name)
            self.fc = nn.Sequential(nn.Linear(3, 3), nn.Dropout(dropout))

        def forward(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(c), "scale": torch.ones_like(c)}
    student, teacher = P("s", 0.0), P("t", 0.5)
    model = Model((-LogProb(student)).mean(), distributions=[student], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.1}, test_loss=(-LogProb(teacher)).mean())
    data = {"x": torch.randn(8, 3), "c": torch.randn(8, 3)}
    values = [model.test(data) for _ in range(3)]
    teacher.eval()
    expected = -torch.distributions.Normal(teacher.fc(data["c"]), 1.0).log_prob(data["x"]).sum(-1).mean()
    teacher.train()
    for v in values:
        torch.testing.assert_close(v, expected)
    model.test(data)
    assert teacher.training and not student.training


def test_a_subclass_with_its_own_history_method_saves_and_loads(tmp_path: Any) -> None:
    """The attack on the above: ``Model.save`` read ``model.history.items()`` (a subclass's method or list broke it),
    and ``load`` set ``history`` and ``epoch`` over a subclass's own."""
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Mine(Model):
        def history(self) -> str:  # type: ignore[override]
            return "mine"

        @property
        def epoch(self) -> int:  # type: ignore[override]
            return 7

    with renamed_import():  # (pyro_dgm's decoder)
        p = scalar_decoder()
    m = Mine((-LogProb(p)).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    data = {"x": torch.ones(2, 1), "c": torch.ones(2, 1)}
    m.train(data)
    m.save(str(tmp_path / "m.pt"))
    w = p.fc.weight.detach().clone()
    m.train(data)
    m.load(str(tmp_path / "m.pt"), resume=True)
    assert torch.equal(p.fc.weight.detach(), w) and m.history() == "mine" and m.epoch == 7


def test_a_discriminator_optimizer_that_only_steps_trains_and_saves(tmp_path: Any) -> None:
    """An adversarial term's optimizer factory returning an object with ``step`` and ``zero_grad`` only (Pixyz
    takes it): the discriminator steps with it (weights as plain SGD's) and the model saves and loads."""
    from torch import nn

    from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
    from pyro_dgm.losses import AdversarialJensenShannon
    from pyro_dgm.models import Model

    class Dis(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"t": torch.sigmoid(self.fc(x))}

    class G(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(z), "scale": torch.ones_like(z)}
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="prior")
    dis = Dis()
    loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), (G() * prior).marginalize_var("z"), dis,
                                    optimizer=PlainSGD, optimizer_params={"lr": 0.1})
    m = Model(loss.mean(), distributions=[loss.q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    x = torch.randn(8, 2)
    m.train({"x": x})
    w0 = dis.fc.weight.detach().clone()
    torch.manual_seed(3)  # the draws loss_train makes below: its loss, and plain SGD's step on it
    d_loss = loss.eval({"x": x}, discriminator=True)
    expected = w0 - 0.1 * torch.autograd.grad(d_loss, dis.fc.weight)[0]
    torch.manual_seed(3)
    torch.testing.assert_close(loss.loss_train({"x": x}), d_loss.detach())
    torch.testing.assert_close(dis.fc.weight.detach(), expected)
    m.save(str(tmp_path / "g.pt"))
    loss.loss_train({"x": x})
    assert not torch.equal(dis.fc.weight.detach(), expected)
    m.load(str(tmp_path / "g.pt"), resume=True)
    torch.testing.assert_close(dis.fc.weight.detach(), expected)  # the discriminator's weights saved, loaded
