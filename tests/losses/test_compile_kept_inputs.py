"""A compiled evaluation runs each network as often as the eager one (probe p306): a traced memo entry whose input
another network has since been given is dropped only if that network changed an input in place in its eager runs
(the compiled call's first call is eager), since the compilers do not merge a forward pass run twice. The reference
is the same model trained eagerly (``backend="eager"`` runs the same operations in the same order)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import IterativeLoss, KullbackLeibler
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]

T, B, X, Z = 4, 5, 3, 2


class Enc(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x", "z_prev"], name="q")
        self.fc = nn.Linear(X + Z, 2 * Z)

    def forward(self, x: torch.Tensor, z_prev: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b = self.fc(torch.cat([x, z_prev], -1)).chunk(2, -1)
        return {"loc": a, "scale": F.softplus(b) + .1}


class Trans(Normal):
    def __init__(self, in_place: bool) -> None:
        super().__init__(var=["z"], cond_var=["z_prev"], name="p")
        self.fc, self.in_place = nn.Linear(Z, 2 * Z), in_place

    def forward(self, z_prev: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.in_place:
            z_prev.mul_(0.5)  # (changes the encoder's input between its two uses)
        a, b = self.fc(z_prev).chunk(2, -1)
        return {"loc": a, "scale": F.softplus(b) + .1}


class Emit(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="e")
        self.fc = nn.Linear(Z, X)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": torch.sigmoid(self.fc(z))}


def _train(compile: Any, in_place: bool, sequence: bool) -> tuple[list[int], list[float]]:
    """The encoder's forward passes and the loss at each of four steps of a DMM (``sequence``) or of its one step."""
    torch.manual_seed(0)
    q, p, e = Enc(), Trans(in_place), Emit()
    calls = [0]
    q.fc.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    step = KullbackLeibler(q, p) - e.log_prob().expectation(q)
    loss = (IterativeLoss(step, series_var=["x"], update_value={"z": "z_prev"}) if sequence else step).mean()
    model = Model(loss, distributions=[q, p, e], **({"compile": compile} if compile else {}))
    x = (torch.rand(T, B, X) > .5).float()
    counts, values = [], []
    for _ in range(4):
        calls[0] = 0
        d = {"x": x if sequence else x[0], "z_prev": torch.zeros(B, Z)}
        values.append(float(model.train(d)))
        counts.append(calls[0])
    return counts, values


@pytest.mark.parametrize("sequence, in_place", [(True, False), (False, False), (False, True)],
                         ids=["DMM", "one step", "one step, z_prev changed in place"])
def test_a_compiled_step_runs_the_encoder_as_often_as_the_eager_one(sequence: bool, in_place: bool) -> None:
    """Probe p306: compiled, a DMM step ran the encoder ``q(z|x, z_prev)`` twice per time step (8 passes for 4 steps,
    eager and Pixyz 4): the transition ``p(z|z_prev)`` was given ``z_prev``, which a network may change in place, so
    the encoder's traced entry was dropped and its second use ran it again (and the compilers did not merge the two
    passes). A transition that does change it in place (the data ``z_prev`` of one step; a later step's ``z_prev`` is a
    draw that autograd needs) still makes the encoder run again, as eagerly."""
    eager_counts, eager_values = _train(None, in_place, sequence)
    counts, values = _train({"backend": "eager"}, in_place, sequence)
    assert counts == eager_counts  # (the first step is eager, the others compiled)
    assert values == pytest.approx(eager_values, rel=1e-5)
    if not in_place:
        assert eager_counts[0] == (T if sequence else 1)
