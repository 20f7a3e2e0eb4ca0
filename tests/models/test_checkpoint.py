"""Checkpoints: a fresh model loaded from step N continues exactly like an uninterrupted run; shape errors."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyro
import pytest
import torch
from dgm_model_helpers import digits, make_ml, make_vae

from pyro_dgm.losses import Loss
from pyro_dgm.models import Model


def _weights(model: Model) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.distributions.state_dict().values()]


def test_resume_is_exact_with_mc_sampling(tmp_path: Path) -> None:
    """N steps + save, then a fresh model (other init, other RNG) + load + M steps == N + M steps straight."""
    x = digits()[0][:64]
    n, m = 3, 4

    pyro.set_rng_seed(0)
    straight = make_vae()
    losses = [float(straight.train({"x": x})) for _ in range(n + m)]

    pyro.set_rng_seed(0)
    first = make_vae()
    for _ in range(n):
        first.train({"x": x})
    first.save(tmp_path / "ckpt.pt")

    pyro.set_rng_seed(123)  # the fresh model starts from other weights and another random state
    fresh = make_vae()
    assert not all(torch.equal(a, b) for a, b in zip(_weights(fresh), _weights(first)))
    torch.randn(100)
    fresh.load(tmp_path / "ckpt.pt", resume=True)
    assert fresh.step == n
    resumed = [float(fresh.train({"x": x})) for _ in range(m)]

    assert resumed == losses[n:]  # the MC draws, the Adam moments and the weights all continue exactly
    assert all(torch.equal(a, b) for a, b in zip(_weights(fresh), _weights(straight)))
    assert fresh.step == straight.step == n + m


def test_resume_inside_fit_with_shuffling_and_python_numpy_rng(tmp_path: Path) -> None:
    """fit's shuffled order, the epoch counter and the history resume too; python/numpy RNG states are restored."""
    data = {"x": digits()[0][:120]}

    pyro.set_rng_seed(0)
    straight = make_vae()
    full = straight.fit(data, epochs=3, batch_size=50, progress=False)

    pyro.set_rng_seed(0)
    first = make_vae()
    first.fit(data, epochs=2, batch_size=50, progress=False)
    first.save(tmp_path / "ckpt.pt")
    expected_py, expected_np = random.random(), np.random.rand()

    pyro.set_rng_seed(7)
    fresh = make_vae()
    fresh.load(tmp_path / "ckpt.pt", resume=True)
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)
    fresh.load(tmp_path / "ckpt.pt", resume=True)
    assert fresh.epoch == 2 and fresh.history["epoch"] == [1, 2]
    rest = fresh.fit(data, epochs=1, batch_size=50, progress=False)
    assert rest["epoch"] == [3]
    assert rest["train_loss"] == full["train_loss"][2:]
    assert fresh.history["train_loss"] == full["train_loss"]


class _StatefulTerm(Loss):
    """A term owning state (as adversarial terms own a discriminator optimizer): a counter of evaluations."""

    def __init__(self) -> None:
        super().__init__(input_var=[])
        self.calls = torch.zeros(())

    @property
    def latex(self) -> str:
        return "c"

    def forward(self, values: dict[str, Any], **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        return self.calls * 0.0

    def term_state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls.clone()}

    def load_term_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = state["calls"].clone()


def test_loss_terms_state_and_extra_optimizers_are_saved(tmp_path: Path) -> None:
    x, y = digits()
    data = {"x": x[:32], "y": y[:32]}

    def build() -> Model:
        ml = make_ml()
        term = _StatefulTerm()
        model = Model(ml.loss_cls + term, distributions=list(ml.distributions))
        model.term = term
        model.d_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9)
        return model

    model = build()
    for _ in range(3):
        model.train(data)
    p = model.d_optimizer.param_groups[0]["params"][0]
    p.grad = torch.ones(2)
    model.d_optimizer.step()
    model.save(tmp_path / "c.pt")
    fresh = build()
    fresh.load(tmp_path / "c.pt", resume=True)
    assert float(fresh.term.calls) == 3
    buf = fresh.d_optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, torch.ones(2))
    plain = make_ml()  # a model without the extra optimizer cannot take this checkpoint
    with pytest.raises(ValueError, match="optimizers"):
        plain.load(tmp_path / "c.pt", resume=True)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    make_vae(h=32).save(tmp_path / "small.pt")
    other = make_vae(h=48)
    before = _weights(other)
    with pytest.raises(ValueError, match=r"distributions\.0\.net\.0\.weight has shape \(32, 64\) in the checkpoint "
                                         r"but \(48, 64\) in this model"):
        other.load(tmp_path / "small.pt", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(other)))  # nothing changed
    with pytest.raises(ValueError, match=r"missing tensors \['0\.net\.weight', '0\.net\.bias'\]"):
        make_ml().load(tmp_path / "small.pt", resume=True)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pyro_dgm Model checkpoint"):
        make_ml().load(tmp_path / "other.pt", resume=True)
