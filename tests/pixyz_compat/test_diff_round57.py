"""Fifty-seventh round (probe p399), under Pixyz and here (:mod:`pixyz_harness`): an adversarial term whose
``bce_loss`` the program replaces (Pixyz's divergences compute their cross-entropies with it), and a Wasserstein
critic given batches of two sizes (its losses are means of each side, which Pixyz takes)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _generator_and_critic(deterministic: Any, normal: Any, cond: tuple = ("z",), probability: bool = True) -> tuple:
    """A generator ``p(x|z[, c])`` (a linear map, ``z`` marginalized) and a critic ``d(t|x)`` of the given Pixyz or
    pyro_dgm classes; the critic outputs a probability (a sigmoid) or a score."""
    from torch import nn

    class G(deterministic):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=list(cond), name="p")
            self.model = nn.Linear(2 * len(cond), 3)

        def forward(self, z: torch.Tensor, c: Any = None) -> dict:
            return {"x": self.model(z if c is None else torch.cat([z, c], -1))}

    class D(deterministic):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.model = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.model(x)
            return {"t": torch.sigmoid(h) if probability else h}

    prior = normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    return (G() * prior).marginalize_var("z"), D()


@pytest.mark.parametrize("cls, inverse", [("AdversarialJensenShannon", True), ("AdversarialJensenShannon", False),
                                          ("AdversarialKullbackLeibler", None)])
@pytest.mark.parametrize("criterion", ["sum", "weighted", "smoothed"])
def test_a_replaced_bce_loss_is_the_one_the_term_computes_with(cls: str, inverse: Any, criterion: str) -> None:
    """``adv.bce_loss = nn.BCELoss(reduction="sum")`` (or with weights, or a subclass that smooths the labels):
    the generator's loss, the discriminator's loss and an SGD step of the discriminator are Pixyz's, which calls
    the replaced criterion. The term computed with its own cross-entropy and ignored the attribute: 1.49 where
    Pixyz gives 5.97 (the sum over 4 rows), and another SGD step (probe p399)."""
    def program() -> Any:
        import torch
        from torch import nn, optim

        import pixyz.losses as losses
        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal

        class Smoothed(nn.BCELoss):
            def forward(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return super().forward(y, 0.9 * t + 0.05)

        torch.manual_seed(0)
        p, d = _generator_and_critic(Deterministic, Normal)
        options = {} if inverse is None else {"inverse_g_loss": inverse}
        adv = getattr(losses, cls)(p, EmpiricalDistribution(["x"]), discriminator=d, optimizer=optim.SGD,
                                   optimizer_params={"lr": 0.1}, **options)
        adv.bce_loss = {"sum": nn.BCELoss(reduction="sum"), "weighted": nn.BCELoss(weight=torch.tensor([3.0])),
                        "smoothed": Smoothed()}[criterion]
        x = torch.randn(4, 3)
        g = adv.eval({"x": x})
        g.backward()
        return {"g": g.detach(), "g_grad": p.parameters().__next__().grad.clone(),
                "d": adv.eval({"x": x}, discriminator=True).detach(), "train": adv.loss_train({"x": x}).detach(),
                "weight": d.model.weight.detach().clone(), "after": adv.eval({"x": x}).detach()}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("sizes", [(6, 4), (1, 4), (4, 7)])
def test_a_wasserstein_critic_takes_batches_of_two_sizes_as_pixyz(sizes: tuple) -> None:
    """A conditional generator ``p(x|z, c)`` against the data, ``c`` of 6 (or 1, or 4) rows and ``x`` of 4 (or 7):
    the critic's estimate is ``mean d(x_p) - mean d(x_data)`` over each side's own rows, as in Pixyz (its
    generator's loss, the critic's, a clipped critic step and a ``Model`` step of the generator). Here it
    raised "expected a batch of 6" (probe p399)."""
    n_c, n_x = sizes

    def program() -> Any:
        import torch
        from torch import optim

        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialWassersteinDistance
        from pixyz.models import Model

        torch.manual_seed(1)
        p, d = _generator_and_critic(Deterministic, Normal, cond=("z", "c"), probability=False)
        adv = AdversarialWassersteinDistance(p, EmpiricalDistribution(["x"]), discriminator=d)
        data = {"x": torch.randn(n_x, 3), "c": torch.randn(n_c, 2)}
        model = Model(adv, distributions=[p], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        return {"g": adv.eval(data).detach(), "d": adv.eval(data, discriminator=True).detach(),
                "train": adv.loss_train(data).detach(), "critic": d.model.weight.detach().clone(),
                "step": torch.as_tensor(model.train(data)), "generator": p.parameters().__next__().detach().clone()}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("change", ["backward_hook", "old_backward_hook", "global_forward_hook",
                                    "global_backward_hook", "instance_forward", "class_forward"])
def test_a_hooked_or_patched_bce_loss_is_called_as_pixyz_calls_it(change: str) -> None:
    """The default ``bce_loss`` with a backward hook that scales its input's gradient by 5 (full or old-style, its
    own or a global one), a global forward hook that triples its output, or its ``forward`` replaced on the
    instance or on ``nn.BCELoss`` (doubling it): the generator's loss, its gradient and the discriminator's loss
    are Pixyz's, which calls the module. The term took its own cross-entropy when the module had no forward hook
    of its own, and the hooks and patches never ran (probe p402)."""
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn.modules import module as nn_module

        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialJensenShannon

        torch.manual_seed(2)
        p, d = _generator_and_critic(Deterministic, Normal)
        adv = AdversarialJensenShannon(EmpiricalDistribution(["x"]), p, discriminator=d)
        b = adv.bce_loss
        scale_grad = lambda m, gi, go: (gi[0] * 5, None)  # noqa: E731
        triple = lambda m, i, o: o * 3 if isinstance(m, nn.BCELoss) else None  # noqa: E731
        original = nn.BCELoss.forward
        handle = None
        if change == "backward_hook":
            handle = b.register_full_backward_hook(scale_grad)
        elif change == "old_backward_hook":
            handle = b.register_backward_hook(scale_grad)
        elif change == "global_forward_hook":
            handle = nn_module.register_module_forward_hook(triple)
        elif change == "global_backward_hook":
            handle = nn_module.register_module_full_backward_hook(
                lambda m, gi, go: (gi[0] * 5, None) if isinstance(m, nn.BCELoss) else None)
        elif change == "instance_forward":
            b.forward = lambda i, t: 2 * original(b, i, t)
        else:
            nn.BCELoss.forward = lambda self, i, t: 2 * original(self, i, t)
        try:
            x = torch.randn(5, 3)
            g = adv.eval({"x": x})
            g.backward()
            return {"g": g.detach(), "grad": p.parameters().__next__().grad.clone(),
                    "d": adv.eval({"x": x}, discriminator=True).detach()}
        finally:
            nn.BCELoss.forward = original
            if handle is not None:
                handle.remove()

    ref, ours = run_both(program)
    assert_same(ref, ours)
