"""Forty-sixth round: an adversarial term whose discriminator was deleted (probe p273), under Pixyz and here
(:mod:`pixyz_harness`)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import run_both

from test_diff_round45 import _gan_parts


def test_a_deleted_discriminator_is_named_and_one_put_back_trains_as_under_pixyz() -> None:
    """Probe p273: ``del loss.d``, then an evaluation and a discriminator step: Pixyz raises ``AttributeError``
    naming ``d``; pyro_dgm raised one about ``None`` (``'NoneType' object has no attribute 'input_var'``) naming
    neither the term nor ``d``. A discriminator put back afterwards is the one used, as under Pixyz."""
    def program() -> Any:
        import torch
        from torch import optim

        from pixyz.losses import AdversarialJensenShannon
        from pixyz.distributions import EmpiricalDistribution

        torch.manual_seed(0)
        generator, Dc = _gan_parts()
        term = AdversarialJensenShannon(EmpiricalDistribution(["x"]), generator, Dc(), optimizer=optim.SGD,
                                        optimizer_params={"lr": 0.1})
        x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) + 2
        del term.d
        errors = []
        for call in (lambda: term.eval({"x": x}), lambda: term.loss_train({"x": x}), lambda: term.d):
            try:
                call()
                errors.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                errors.append((type(e).__name__, str(e)))
        d2 = Dc()
        term.d = d2
        term.d_optimizer = optim.SGD(d2.parameters(), lr=0.1)
        values = [float(term.loss_train({"x": x})) for _ in range(2)] + [float(term.eval({"x": x}))]
        return errors, values, [p.detach().clone() for p in d2.parameters()]

    ref, ours = run_both(program)
    for (pixyz_cls, pixyz_text), (cls, text) in zip(ref[0], ours[0]):
        assert pixyz_cls == cls == "AttributeError" and "'d'" in pixyz_text
        assert "AdversarialJensenShannon" in text and "no discriminator d" in text and "deleted" in text
    assert ours[1] == pytest.approx(ref[1], rel=1e-6)
    for a, b in zip(ref[2], ours[2]):
        torch.testing.assert_close(b, a)


def test_an_input_that_is_not_a_tensor_given_to_torch_cat_is_named() -> None:
    """Probe p274: a value that is not a tensor reaching ``torch.cat`` in ``forward`` (the usual CVAE pattern): Pixyz
    raises torch's ``TypeError`` ("expected Tensor as element 0 in argument 0, but got str"); pyro_dgm raised the same
    text, naming neither the distribution nor the variable (it named them where the network took the value itself)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x", "y"], name="q")
                self.net = nn.Linear(4, 2)

            def forward(self, x, y):  # type: ignore[no-untyped-def]
                return {"loc": self.net(torch.cat([x, y], -1)), "scale": torch.ones(2)}

        prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p")
        out = []
        for bad in ("abc", None, object()):
            try:
                KullbackLeibler(Q(), prior).eval({"x": bad, "y": torch.zeros(1, 2)})
                out.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                out.append((isinstance(e, TypeError), str(e)))
        return out

    ref, ours = run_both(program)
    for (pixyz_type_error, pixyz_text), (type_error, text) in zip(ref, ours):
        assert pixyz_type_error and type_error and "but got" in pixyz_text
        assert "q(z|x,y)" in text and "'x'" in text and "takes tensors" in text
