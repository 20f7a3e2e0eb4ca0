"""Pixyz 0.3.3's model tests (``tests/models/``), re-written as differential programs: ``Model`` (print, train,
test, clipping, save/load, ``set_loss``), ``VAE``, ``VI``, ``ML`` and ``GAN``, trained a few steps from the same
seed under Pixyz 0.3.3 and under pyro_dgm; the losses, the weights after training and the texts must agree.

Each step gets its own batch tensor (``x.clone()``), as a data loader gives: Pixyz's global memoizing cache would
reuse the freed graph of the previous step on the same tensor (``test_diff_models.py`` shows that case).
"""
from __future__ import annotations

import pytest

from pixyz_harness import assert_same, docstring_vae, run_pixyz, run_pyro_dgm, same


def model_train_and_test():
    from torch import optim
    from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
    from pixyz.models import Model
    q, p, prior, x = docstring_vae()
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    model = Model(loss=loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    losses = [model.train({"x": x.clone()}) for _ in range(3)]
    test = model.test({"x": x.clone()})
    return str(model), losses, test, p.fc2.weight, q.fc22.bias, test.requires_grad


def model_with_clipping_and_test_loss():
    from torch import optim
    from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
    from pixyz.models import Model
    q, p, prior, x = docstring_vae()
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    test_loss = KullbackLeibler(q, prior).mean()
    model = Model(loss=loss, test_loss=test_loss, distributions=[p, q], optimizer=optim.SGD,
                  optimizer_params={"lr": 0.1}, clip_grad_norm=0.5, clip_grad_value=0.1)
    a = model.train({"x": x.clone()})
    b = model.test({"x": x.clone()})
    model.set_loss(test_loss)
    c = model.train({"x": x.clone()})
    return str(model), a, b, c, p.fc1.weight, q.fc1.weight


def vae_vi_ml():
    from torch import optim
    from pixyz.losses import KullbackLeibler
    from pixyz.models import VAE, VI, ML
    q, p, prior, x = docstring_vae()
    vae = VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    v = [vae.train({"x": x.clone()}) for _ in range(2)] + [vae.test({"x": x.clone()})]
    q2, p2, prior2, _ = docstring_vae()
    vi = VI(p2 * prior2, q2, optimizer_params={"lr": 1e-2})
    w = [vi.train({"x": x.clone()}) for _ in range(2)] + [vi.test({"x": x.clone()})]
    _, p3, _, _ = docstring_vae()
    ml = ML(p3, optimizer_params={"lr": 1e-2})
    z = q.sample({"x": x})["z"].detach()
    m = [ml.train({"x": x.clone(), "z": z.clone()}) for _ in range(2)] + [ml.test({"x": x.clone(), "z": z.clone()})]
    return str(vae), str(vi), str(ml), v, w, m, p.fc2.weight, p3.fc2.weight


def gan_program():
    import torch
    from torch import nn, optim
    from pixyz.distributions import Deterministic, Normal
    from pixyz.models import GAN

    class Generator(Deterministic):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.model = nn.Sequential(nn.Linear(2, 4), nn.Tanh())

        def forward(self, z):
            return {"x": self.model(z)}

    class Discriminator(Deterministic):
        def __init__(self):
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())

        def forward(self, x):
            return {"t": self.model(x)}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    d = Discriminator()
    model = GAN(p, d, optimizer=optim.Adam, optimizer_params={"lr": 1e-3}, d_optimizer=optim.Adam,
                d_optimizer_params={"lr": 1e-3})
    x = torch.rand(6, 4)
    out = [model.train({"x": x.clone()}) for _ in range(2)] + [model.test({"x": x.clone()})]
    return str(model), out, d.model[0].weight


@pytest.mark.parametrize("program", [model_train_and_test, model_with_clipping_and_test_loss, vae_vi_ml,
                                     gan_program])
def test_models(program) -> None:  # type: ignore[no-untyped-def]
    same(program, rtol=1e-4, atol=1e-5)


def _save_load(folder: str):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        import os
        import torch
        from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
        from pixyz.models import Model
        q, p, prior, x = docstring_vae()
        loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
        model = Model(loss=loss, distributions=[p, q], optimizer_params={"lr": 1e-2})
        model.train({"x": x.clone()})
        path = os.path.join(folder, "model.pth")
        model.save(path)
        saved = torch.load(path)
        before = p.fc2.weight.clone()
        model.train({"x": x.clone()})
        model.load(path)
        # (ours saves more: optimizer, counters and RNG states; Pixyz's "distributions" entry is there as Pixyz's)
        return "distributions" in saved, sorted(saved["distributions"]), bool(torch.equal(before, p.fc2.weight)), before
    return program


def test_model_save_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert_same(run_pixyz(_save_load(str(tmp_path / "a"))), run_pyro_dgm(_save_load(str(tmp_path / "b"))))


def _train_and_save(path: str):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        import torch
        from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
        from pixyz.models import Model
        q, p, prior, x = docstring_vae()
        model = Model(loss=(KullbackLeibler(q, prior) - E(q, LogProb(p))).mean(), distributions=[p, q],
                      optimizer_params={"lr": 1e-2})
        for _ in range(3):
            model.train({"x": x.clone()})
        model.save(path)
        torch.manual_seed(0)  # the test loss draws z: the same draws as the reader's
        return [w.detach().clone() for w in model.distributions.parameters()], model.test({"x": x.clone()})
    return program


def _load(path: str):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        import torch
        from pixyz.losses import KullbackLeibler, LogProb, Expectation as E
        from pixyz.models import Model
        q, p, prior, x = docstring_vae()  # the writer's x, and its initial (untrained) weights
        model = Model(loss=(KullbackLeibler(q, prior) - E(q, LogProb(p))).mean(), distributions=[p, q],
                      optimizer_params={"lr": 1e-2})
        model.load(path)
        torch.manual_seed(0)
        return [w.detach().clone() for w in model.distributions.parameters()], model.test({"x": x.clone()})
    return program


@pytest.mark.parametrize("writer, reader", [(run_pixyz, run_pyro_dgm), (run_pyro_dgm, run_pixyz)],
                         ids=["pixyz_file_read_here", "our_file_read_by_pixyz"])
def test_a_checkpoint_of_one_library_loads_into_the_other(tmp_path, writer, reader):  # type: ignore[no-untyped-def]
    """A Pixyz user's saved models load after renaming the import (Pixyz's Model.save writes the distributions' state
    dict alone; Model.load here refused it), and Pixyz's Model.load reads ours (its 'distributions' entry)."""
    path = str(tmp_path / "model.pth")
    saved_weights, saved_test = writer(_train_and_save(path))
    loaded_weights, loaded_test = reader(_load(path))
    assert_same(saved_weights, loaded_weights)
    assert_same(saved_test, loaded_test, rtol=1e-5, atol=1e-6)
