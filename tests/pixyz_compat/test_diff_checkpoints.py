"""``Model.save`` / ``Model.load`` under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

Pixyz's ``load`` reads the distributions' state dict and leaves the rest as it is: the model's optimizer (its moments
and learning rate, even another class than the saved model's), and the random state. Ours did more by default (it
restored the saved optimizer and random states, and refused a model built with another optimizer), so the numbers
after a ``load`` were not Pixyz's. Now ``load(path)`` is Pixyz's, and ``load(path, resume=True)`` restores everything
:meth:`save` wrote (``tests/models/test_checkpoint.py``).
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from pixyz_harness import assert_same, run_both


def _vae() -> tuple[Callable[..., Any], Any, Any]:
    import torch
    from torch import nn, optim

    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import KullbackLeibler
    from pixyz.models import VAE

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 6)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc(z))}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")

    def build(optimizer: Any = optim.Adam, **params: Any) -> Any:
        q, p = Q(), P()
        return VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer=optimizer, optimizer_params=params)

    return build, prior, torch.bernoulli(torch.full((8, 6), 0.4))


def prog_load_into_a_model_with_another_optimizer() -> Any:
    import os
    import tempfile

    from torch import optim
    build, _, x = _vae()
    model = build(optim.RMSprop, lr=1e-2)
    model.train({"x": x.clone()})
    path = os.path.join(tempfile.mkdtemp(), "m.pt")
    model.save(path)
    evaluator = build()  # a notebook that rebuilds the model (default Adam) to evaluate it
    evaluator.load(path)
    return evaluator.test({"x": x.clone()})


def prog_random_draws_after_load() -> Any:
    import os
    import tempfile

    import torch
    build, prior, x = _vae()
    model = build(lr=1e-2)
    model.train({"x": x.clone()})
    path = os.path.join(tempfile.mkdtemp(), "m.pt")
    model.save(path)
    before = prior.sample(batch_n=2)["z"]
    model.load(path)
    return {"before": before, "after": prior.sample(batch_n=2)["z"], "torch": torch.rand(2)}


def prog_training_after_load() -> Any:
    import os
    import tempfile

    import torch
    build, _, x = _vae()
    model = build(lr=1e-1)
    for _ in range(2):
        model.train({"x": x.clone()})
    path = os.path.join(tempfile.mkdtemp(), "m.pt")
    model.save(path)
    fresh = build(lr=1e-1)  # its Adam starts with no moments, under Pixyz and here
    fresh.load(path)
    torch.manual_seed(5)
    losses = [fresh.train({"x": x.clone()}) for _ in range(2)]
    return {"losses": losses, "weights": [t.detach().clone() for t in fresh.distributions.parameters()]}


@pytest.mark.parametrize("program", [prog_load_into_a_model_with_another_optimizer, prog_random_draws_after_load,
                                     prog_training_after_load], ids=lambda f: f.__name__[5:])
def test_load_is_pixyzs(program: Callable[[], Any]) -> None:
    assert_same(*run_both(program))


def test_resume_restores_what_save_wrote(tmp_path: Any) -> None:
    # the opt-in: the saved Adam moments and random state, so the run continues as if never stopped
    import torch

    from pixyz_harness import renamed_import
    with renamed_import():
        build, _, x = _vae()
        model = build(lr=1e-1)
        for _ in range(2):
            model.train({"x": x.clone()})
        model.save(tmp_path / "m.pt")
        expected = [model.train({"x": x.clone()}) for _ in range(2)]
        fresh = build(lr=1e-1)
        fresh.load(tmp_path / "m.pt", resume=True)
        assert torch.equal(torch.stack([fresh.train({"x": x.clone()}) for _ in range(2)]), torch.stack(expected))
        plain = build(lr=1e-1)
        plain.load(tmp_path / "m.pt")
        assert not torch.equal(plain.train({"x": x.clone()}), expected[0])  # fresh moments: another step
