"""The paper's TD-VAE (its Figure A1(b)) and the two things it relies on, run under Pixyz 0.3.3 and under pyro_dgm.

TD-VAE's ``IterativeLoss`` takes a ``slice_step``: a :class:`Deterministic` whose ``forward`` picks random time steps
t1 < t2 of a batch-first series (so the series is never indexed by step, and may have fewer rows than ``max_iter``).
Pixyz runs a Deterministic's forward on every use, so each step of the loss draws new time steps; pyro_dgm's
memoizer must not reuse a forward that drew random numbers. Same seed, same draws: the values, gradients and
training steps agree to float tolerance.
"""
from __future__ import annotations

from typing import Any

from pixyz_harness import assert_same, run_both

B, T, DX, DB, DZ = 4, 6, 3, 4, 2  # a batch smaller than the number of steps (T - 1): Pixyz never checks it


def _tdvae() -> tuple[list[Any], Any]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    from pixyz.distributions import Bernoulli, Deterministic, Normal
    from pixyz.losses import Expectation as E
    from pixyz.losses import IterativeLoss, KullbackLeibler, LogProb

    class Belief(Deterministic):
        def __init__(self):
            super().__init__(var=["b"], cond_var=["x"], name="f_{b}")
            self.rnn = nn.GRU(DX, DB, batch_first=True)

        def forward(self, x):
            return {"b": self.rnn(x)[0]}

    class SliceStep(Deterministic):  # random t1 < t2 per sequence, from torch's generator
        def __init__(self):
            super().__init__(var=["x_t2", "b_t1", "b_t2"], cond_var=["x", "b"], name="s")

        def forward(self, x, b):
            t1 = torch.randint(0, T - 2, (x.shape[0],))
            t2 = t1 + torch.randint(1, 3, (x.shape[0],))
            i = torch.arange(x.shape[0])
            return {"x_t2": x[i, t2], "b_t1": b[i, t1], "b_t2": b[i, t2]}

    def gaussian(var: str, cond: list[str], n_in: int, name: str) -> Normal:
        class G(Normal):
            def __init__(self):
                super().__init__(var=[var], cond_var=cond, name=name)
                self.fc = nn.Linear(n_in, 2 * DZ)

            def forward(self, **inputs):
                h = self.fc(torch.cat([inputs[c] for c in cond], -1))
                return {"loc": h[:, :DZ], "scale": F.softplus(h[:, DZ:]) + 0.1}
        return G()

    class Decoder(Bernoulli):
        def __init__(self):
            super().__init__(var=["x_t2"], cond_var=["z_t2"], name="p_{D}")
            self.fc = nn.Linear(DZ, DX)

        def forward(self, z_t2):
            return {"probs": torch.sigmoid(self.fc(z_t2))}

    belief, step = Belief(), SliceStep()
    # p_B at t1 and at t2 (Pixyz's replace_var cannot stand in a KL: its set_dist does not rename the inputs)
    p_b1, p_b2 = gaussian("z_t1", ["b_t1"], DB, "p_{B}"), gaussian("z_t2", ["b_t2"], DB, "p_{B}")
    q = gaussian("z_t1", ["z_t2", "b_t1", "b_t2"], DZ + 2 * DB, "q")
    p_t = gaussian("z_t2", ["z_t1"], DZ, "p_{T}")
    p_d = Decoder()
    reconst = E(q, LogProb(p_t) + LogProb(p_d) - LogProb(p_b2))
    step_elbo = E(p_b2, reconst - KullbackLeibler(q, p_b1))
    elbo = E(belief, IterativeLoss(step_elbo, max_iter=T - 1, series_var=["x", "b"], slice_step=step)).mean()
    return [belief, p_b1, p_b2, q, p_t, p_d], elbo


def test_tdvae_elbo_gradients_and_training_match_pixyz() -> None:
    def program() -> dict[str, Any]:
        import torch
        from torch import optim

        from pixyz.models import Model
        dists, elbo = _tdvae()
        x = torch.bernoulli(torch.full((B, T, DX), 0.5))
        value = elbo.eval({"x": x})
        value.backward()
        grads = [p.grad.clone() for d in dists for p in d.parameters()]
        model = Model(-elbo, distributions=dists, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
        return {"text": str(elbo), "elbo": value, "grads": grads,
                "train": [model.train({"x": x}) for _ in range(3)], "test": model.test({"x": x})}

    ref, ours = run_both(program)
    assert_same(ref, ours, atol=1e-5)


def test_a_random_deterministic_draws_anew_on_each_use() -> None:
    # Two expectations over the same noisy map are two independent draws (Pixyz: not 0); a deterministic map used
    # twice gives the same values (reused or not, the numbers agree).
    def program() -> dict[str, Any]:
        import torch

        from pixyz.distributions import Deterministic, Normal

        class Noisy(Deterministic):
            def __init__(self):
                super().__init__(var=["y"], cond_var=["x"], name="f")

            def forward(self, x):
                return {"y": x + torch.randn_like(x)}

        class Affine(Deterministic):
            def __init__(self):
                super().__init__(var=["y"], cond_var=["x"], name="g")

            def forward(self, x):
                return {"y": 2 * x + 1}

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["y"], features_shape=[1])
        lp = p.log_prob()
        x = torch.zeros(3, 1)
        return {"noisy": (lp.expectation(Noisy()) - lp.expectation(Noisy())).eval({"x": x}),
                "same_noisy": (lp.expectation(f := Noisy()) - lp.expectation(f)).eval({"x": x}),
                "affine": (lp.expectation(g := Affine()) - lp.expectation(g)).eval({"x": x})}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert (ours["same_noisy"] != 0).all() and (ours["affine"] == 0).all()


def test_a_numpy_or_python_random_forward_draws_anew_too() -> None:
    def program() -> list[Any]:
        import random

        import numpy as np
        import torch

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import IterativeLoss, LogProb

        class PickNumpy(Deterministic):
            def __init__(self):
                super().__init__(var=["x_t"], cond_var=["x"], name="s")

            def forward(self, x):
                return {"x_t": x[:, int(np.random.randint(x.shape[1]))]}

        class PickPython(PickNumpy):
            def forward(self, x):
                return {"x_t": x[:, random.randrange(x.shape[1])]}

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x_t"], features_shape=[1])
        x = torch.arange(40.).reshape(2, 20, 1)
        return [IterativeLoss(LogProb(p), max_iter=6, series_var=["x"], slice_step=pick()).eval({"x": x})
                for pick in (PickNumpy, PickPython)]

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_iterative_loss_does_not_check_series_it_does_not_index() -> None:
    # With a slice_step, or a slice_step_fn of the user's, the series may be batch-first and shorter than max_iter.
    def program() -> list[Any]:
        import torch

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import IterativeLoss, LogProb

        class Last(Deterministic):
            def __init__(self):
                super().__init__(var=["x_t"], cond_var=["x"], name="s")

            def forward(self, x):
                return {"x_t": x[:, -1]}

        class BatchFirst(IterativeLoss):
            def slice_step_fn(self, t, x):
                return {k: v[:, t] for k, v in x.items()}

        p_t = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x_t"], features_shape=[1])
        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[1])
        x = torch.arange(8.).reshape(2, 4, 1)  # 2 sequences of 4 steps
        return [IterativeLoss(LogProb(p_t), max_iter=3, series_var=["x"], slice_step=Last()).eval({"x": x}),
                BatchFirst(LogProb(p), max_iter=3, series_var=["x"]).eval({"x": x})]

    ref, ours = run_both(program)
    assert_same(ref, ours)
