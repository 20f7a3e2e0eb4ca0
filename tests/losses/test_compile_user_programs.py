"""Pixyz programs with ``compile=`` added (probe p473, which ran the repository's differential programs compiled):
each trains or evaluates as its eager twin from the same seed.

- ``Model(retain_graph=True, compile=...)`` after another compiled model had trained in the process: its first
  compiled step raised torch's "compiled with non-empty donated buffers" (AOT autograd's donated buffers refuse
  ``retain_graph=True``);
- a user's ``Loss`` subclass with its own attributes named after pyro_dgm's public methods that Pixyz's ``Loss``
  lacks (``frozen_parameters``, ``term_state_dict``): the first compiled step raised "'int' object is not
  callable", and so would ``Model.save``;
- ``Loss.compile()`` on an adversarial term: its discriminator step (``loss_train``) ran the compiled evaluation,
  which freezes the discriminator: "element 0 of tensors does not require grad"."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch
from torch import nn
from torch.nn import functional as F

import pyro_dgm.distributions as pd
from pyro_dgm.losses import AdversarialJensenShannon, KullbackLeibler
from pyro_dgm.losses.losses import Loss
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]

_COMPILE = {"backend": "aot_eager"}


def _vae(compile: Any) -> list[float]:
    torch.manual_seed(0)

    class Q(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": F.softplus(h[:, 2:]) + 0.1}

    class P(pd.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z))}

    p, q = P(), Q()
    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    model = Model(loss, distributions=[p, q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.5},
                  retain_graph=True, compile=compile)
    x = torch.bernoulli(torch.full((8, 4), 0.5))
    return [float(model.train({"x": x.clone()})) for _ in range(3)]


def _regression(compile: Any) -> list[float]:
    torch.manual_seed(0)

    class P(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.net = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 3))

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 3)}

    p = P()
    model = Model(-p.log_prob().mean(), distributions=[p], compile=compile)
    d = {"x": torch.randn(6, 3), "y": torch.randn(6, 2)}
    return [float(model.train({k: v.clone() for k, v in d.items()})) for _ in range(2)]


def test_retain_graph_compiled_after_another_compiled_model() -> None:
    eager = _regression(False) + _vae(False)
    ours = _regression(_COMPILE) + _vae(_COMPILE)
    assert ours == pytest.approx(eager, rel=1e-6, abs=1e-6)


class _NLL(Loss):
    """A user's loss (the Loss API tutorial's way) holding attributes of its own named after pyro_dgm's methods."""

    def __init__(self, p: Any) -> None:
        super().__init__(["x", "y"])
        self.p = p
        self.frozen_parameters = 3
        self.term_state_dict = None
        self.load_term_state_dict = "mine"

    @property
    def _symbol(self) -> Any:
        return sympy.Symbol("N")

    def forward(self, x_dict: dict, **kwargs: Any) -> Any:
        return -self.p.get_log_prob(x_dict), {}


def _user_loss(compile: Any, path: Path, loss_class: type = _NLL) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)

    class P(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.fc(y), "scale": torch.ones(3)}

    p = P()
    model = Model(loss_class(p).mean(), distributions=[p], compile=compile)
    d = {"x": torch.randn(4, 3), "y": torch.randn(4, 2)}
    losses = [float(model.train({k: v.clone() for k, v in d.items()})) for _ in range(3)]
    model.save(path)
    model.load(path)
    losses += [float(model.train({k: v.clone() for k, v in d.items()}))]
    return losses, [t.detach().clone() for t in p.parameters()]


def test_a_users_loss_may_hold_attributes_named_after_our_methods_compiled_and_saved(tmp_path: Path) -> None:
    eager = _user_loss(False, tmp_path / "e.pt")
    ours = _user_loss(_COMPILE, tmp_path / "c.pt")
    assert ours[0] == pytest.approx(eager[0], rel=1e-6, abs=1e-6)
    for a, b in zip(ours[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", [dict, functools.partial(list), nn.ParameterList(), staticmethod(lambda: [])],
                         ids=["type", "partial", "module", "staticmethod"])
def test_class_attributes_named_after_our_methods(tmp_path: Path, value: Any) -> None:
    """(p475) Class attributes of those names that are no methods of the class (a type, a partial, a module), or a
    static method, were bound as methods: ``AttributeError: ... has no attribute '__get__'`` (eagerly too, in
    ``Model.save``), or a static method given ``self``."""
    loss_class = type("NLL", (_NLL,), {"frozen_parameters": value, "term_state_dict": value})
    eager = _user_loss(False, tmp_path / "e.pt", loss_class)
    ours = _user_loss(_COMPILE, tmp_path / "c.pt", loss_class)
    assert ours[0] == pytest.approx(eager[0], rel=1e-6, abs=1e-6)


def _adversarial(compile: bool) -> list[float]:
    torch.manual_seed(0)

    class Generator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.fc(z)}

    class Discriminator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": torch.sigmoid(self.fc(x))}

    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    p = (Generator() * prior).marginalize_var("z")
    loss = AdversarialJensenShannon(p, pd.EmpiricalDistribution(["x"]), discriminator=Discriminator(),
                                    optimizer_params={"lr": 0.1})
    if compile:
        loss.compile(**_COMPILE)
    x = torch.randn(8, 3)
    return ([float(loss.eval({"x": x}))] + [float(loss.loss_train({"x": x.clone()})) for _ in range(3)]
            + [float(loss.eval({"x": x.clone()}))])


def test_an_adversarial_terms_discriminator_step_after_loss_compile() -> None:
    assert _adversarial(True) == pytest.approx(_adversarial(False), rel=1e-6, abs=1e-6)
