"""A method a later notebook cell sets on a distribution class reaches the marginals built before it (probe p476:
``G.sample`` wrapped after ``(g * prior).marginalize_var("z")`` was built: Pixyz's marginal draws through the new
method, ours drew through the old one until ``g`` itself was called, and so did an adversarial term and a ``GAN``
over the marginal). Each program runs under Pixyz and here through the harness, from the same seed."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from pixyz_harness import assert_same, run_both


def _late_sample_patch(on_library_class: bool, use: str) -> Callable[[], Any]:
    """A generator ``g`` (a user's ``Deterministic``), its marginal ``∫ g(x|z) p(z) dz``, then a clamping wrapper set
    on ``G.sample`` (or on ``Deterministic.sample``, then put back); ``use``: the marginal's draws, or an adversarial
    term's value over the marginal."""

    def program() -> Any:
        import functools

        import torch
        from torch import nn
        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialJensenShannon

        class G(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 3)

            def forward(self, z: Any) -> dict:
                return {"x": torch.sigmoid(self.fc(z))}

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.fc = nn.Linear(3, 1)

            def forward(self, x: Any) -> dict:
                return {"t": torch.sigmoid(self.fc(x))}

        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        g, d = G(), D()
        with torch.no_grad():
            g.fc.weight.mul_(20)
        marginal = (g * prior).marginalize_var("z")
        cls = Deterministic if on_library_class else G
        original = cls.sample

        @functools.wraps(original)
        def clamped(self: Any, *args: Any, **kwargs: Any) -> dict:
            out = dict(original(self, *args, **kwargs))
            if "x" in out:
                out["x"] = out["x"].clamp(0.3, 0.7)
            return out

        cls.sample = clamped
        try:
            if use == "draws":
                x = marginal.sample(batch_n=200)["x"]
                return x.min(), x.max(), x.mean()
            loss = AdversarialJensenShannon(EmpiricalDistribution(["x"]), marginal, discriminator=d)
            return loss.eval({"x": torch.rand(4, 3)})
        finally:
            if on_library_class:
                cls.sample = original
            else:
                del cls.sample

    return program


@pytest.mark.parametrize("use", ["draws", "adversarial"])
@pytest.mark.parametrize("on_library_class", [False, True], ids=["users_class", "library_class"])
def test_a_sample_set_on_a_class_after_its_marginal_was_built(on_library_class: bool, use: str) -> None:
    """Draws in [0.3, 0.7] (ours: [0, 1]); the adversarial value 1.459206 (ours: 1.444819)."""
    assert_same(*run_both(_late_sample_patch(on_library_class, use)))
