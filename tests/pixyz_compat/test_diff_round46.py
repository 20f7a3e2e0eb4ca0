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


def test_a_model_built_while_the_discriminator_is_deleted_trains_once_one_is_put_back() -> None:
    """Probe p276: ``del term.d``, then ``Model(term, ...)``, then a discriminator put back: Pixyz builds the model
    and trains; pyro_dgm refused the model (the check of which parameters it trains read the missing ``d``)."""
    def program() -> Any:
        import torch
        from torch import optim

        from pixyz.distributions import EmpiricalDistribution
        from pixyz.losses import AdversarialJensenShannon
        from pixyz.models import Model

        torch.manual_seed(0)
        generator, Dc = _gan_parts()
        d0 = Dc()
        term = AdversarialJensenShannon(EmpiricalDistribution(["x"]), generator, d0, optimizer=optim.SGD,
                                        optimizer_params={"lr": 0.1})
        x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) + 2
        del term.d
        model = Model(term, distributions=[generator], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        term.d = d0
        term.d_optimizer = optim.SGD(d0.parameters(), lr=0.1)
        out = []
        for _ in range(2):
            out.append(float(term.loss_train({"x": x})))
            out.append(float(model.train({"x": x})))
        out.append(float(model.test({"x": x})))
        term.add_module("d", None)  # (Pixyz's term.d reads None; evaluating then fails in both)
        return out, term.d is None

    ref, ours = run_both(program)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    assert ref[1] and ours[1]


def test_a_number_input_is_not_blamed_for_a_networks_own_constant_given_to_torch_cat() -> None:
    """Probe p276: a network that multiplies by a number input ``beta`` and gives its own float to ``torch.cat``
    ("but got float"): torch's ``TypeError`` as under Pixyz, not one telling to give ``beta`` as a tensor."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x", "beta"], name="p")
                self.net = nn.Linear(2, 2)
                self.pad = 1.0

            def forward(self, x, beta):  # type: ignore[no-untyped-def]
                h = self.net(x) * beta
                return {"loc": torch.cat([h, self.pad], -1), "scale": torch.ones(3)}

        try:
            P().get_log_prob({"x": torch.zeros(2, 2), "beta": 0.5, "y": torch.zeros(2, 3)})
        except TypeError as e:
            return str(e)
        return None

    ref, ours = run_both(program)
    assert ref == ours == "expected Tensor as element 1 in argument 0, but got float"


def test_a_users_get_params_gets_only_the_keywords_it_names() -> None:
    """Probe p277: a ``get_params(self, params_dict={})`` override (a floor on the scale), and a loss evaluated or
    trained with an extra keyword (``beta=0.5``): Pixyz calls the override with the inputs alone; pyro_dgm passed it
    the keyword (``TypeError: got an unexpected keyword argument 'beta'``)."""
    def program() -> Any:
        import torch
        import torch.nn.functional as F
        from torch import nn, optim

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc = nn.Linear(2, 4)

            def forward(self, x):  # type: ignore[no-untyped-def]
                h = self.fc(x)
                return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:])}

            def get_params(self, params_dict={}):  # type: ignore[no-untyped-def]  # noqa: B006 (as users write it)
                out = dict(super().get_params(params_dict))
                out["scale"] = out["scale"] + 0.1
                return out

        torch.manual_seed(0)
        q = Q()
        prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
        x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
        kl = KullbackLeibler(q, prior)
        values = [kl.eval({"x": x}, beta=0.5), q.log_prob().eval({"x": x, "z": x}, beta=0.5)]
        model = Model(kl.mean(), distributions=[q], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        values.append(model.train({"x": x.clone()}, beta=0.5))
        return [v.detach() for v in values]

    ref, ours = run_both(program)
    for a, b in zip(ref, ours):
        torch.testing.assert_close(b, a)
