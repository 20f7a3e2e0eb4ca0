"""Fault injection on the Model API, round 6: steps that fail midway, the discriminator's step, and programs refused.

A probe found that a step interrupted after its random draws (Ctrl-C in the decoder, after the encoder drew ``z``)
left the generators advanced, so ``except KeyboardInterrupt: model.save(...)`` resumed off the uninterrupted run; that
a GAN interrupted in its generator step had taken that batch's discriminator step, which the resumed run took again;
that the discriminator's step checked no loss or gradient for NaN; that Pixyz programs were refused (an infinite
gradient under ``clip_grad_value``, a float16 loss that overflowed while its gradients were finite); that a
callback's error did not name its epoch and LBFGS gave torch's bare ``TypeError``; and that an interrupted save
could leave an empty temporary file. A second probe found that the first fix (a failed step put the random states
back) made a loop that retries a rejected draw draw the same one forever, and that skipping a batch's
discriminator step in the same process changed a fixed-batch GAN's numbers: a checkpoint now records the failed
step's states and done discriminator step, and the live process goes on as Pixyz's.
"""
from __future__ import annotations

import glob
import math
import os
import random
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pytest
import torch
from dgm_model_helpers import Dot, digits, make_vae
from torch import nn

from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
from pyro_dgm.losses import AdversarialWassersteinDistance
from pyro_dgm.models import GAN, Model, NonFiniteGradientError, NonFiniteLossError
from pyro_dgm.models.checkpoint import atomic_torch_save
from pyro_dgm.utils import generator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm  # noqa: E402

X = digits()[0][:40]


def _weights(*modules: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b))


class _Fault:
    """Raise ``KeyboardInterrupt`` at the ``at``-th forward call of ``module`` (a forward pre-hook: the call is
    counted whether or not it raises)."""

    def __init__(self, module: nn.Module, at: int | None) -> None:
        self.calls, self.at = 0, at
        module.register_forward_pre_hook(self)

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- F1: a step interrupted after its draws
def _vae_run(path: Path, at: int | None, epochs: int = 3) -> Model:
    """fit for ``epochs`` epochs; interrupted at the ``at``-th call of the decoder (after the encoder drew ``z``),
    saved in ``except KeyboardInterrupt``, loaded into a fresh model and continued."""
    pyro.set_rng_seed(0)
    model = make_vae()
    _Fault(model.distributions[1], at)
    try:
        model.fit({"x": X}, epochs=epochs, batch_size=16, progress=False)
        return model
    except KeyboardInterrupt:
        model.save(path)
    pyro.set_rng_seed(99)
    resumed = make_vae()
    resumed.load(path, resume=True)
    resumed.fit({"x": X}, epochs=epochs - resumed.epoch, batch_size=16, progress=False)
    return resumed


@pytest.mark.parametrize("at", [2, 4], ids=["step 2 (mid-epoch)", "step 4 (first of epoch 2)"])
def test_an_interrupt_after_the_steps_draws_resumes_exactly(tmp_path: Path, at: int) -> None:
    """The interrupted step had drawn ``z`` (and moved torch's generator) before the decoder raised: the checkpoint
    held the advanced state and the resumed weights were up to 7e-2 off. A checkpoint saved after a failed step now
    records the random states of its start."""
    full = _vae_run(tmp_path / "full.pt", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exact resume says nothing
        resumed = _vae_run(tmp_path / "c.pt", at)
    assert resumed.step == full.step == 9
    assert _equal(_weights(full.distributions), _weights(resumed.distributions))
    assert full.history["train_loss"] == resumed.history["train_loss"]


def test_a_failed_steps_draws_stay_drawn_and_a_checkpoint_records_its_start(tmp_path: Path) -> None:
    """The live generators keep a failed step's draws (a retry draws anew, as under Pixyz: see the retry test
    below); the checkpoint saved before the next step records torch's, Python's and the thread's generator's
    states of the failed step's start, and a step that succeeds forgets them."""
    model = make_vae()
    fault = _Fault(model.distributions[1], 1)
    own = torch.Generator().manual_seed(5)
    before = torch.get_rng_state(), random.getstate(), own.get_state()
    with generator(own):
        with pytest.raises(KeyboardInterrupt):
            model.train({"x": X[:8]})
        assert not torch.equal(before[2], own.get_state()) and model.step == 0  # z was drawn from it
        model.save(tmp_path / "c.pt")
    rng = torch.load(tmp_path / "c.pt", weights_only=True)["rng"]
    assert torch.equal(rng["torch"], before[0]) and torch.equal(rng["generator"], before[2])
    assert tuple(rng["python"]["state"].tolist()) == before[1][1]
    fault.at = None
    with generator(own):
        model.train({"x": X[:8]})
        model.save(tmp_path / "d.pt")
        now = own.get_state()
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["rng"]["generator"], now)


def _retry_program() -> Any:
    """A user's loop that takes a step again when its network rejects the draw (raises): each retry draws anew."""
    import torch
    from torch import nn
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import Expectation as E
    from pixyz.losses import KullbackLeibler, LogProb
    from pixyz.models import Model

    class Q(Normal):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:])}

    class P(Bernoulli):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z):  # type: ignore[no-untyped-def]
            if (z.abs() > 2.0).any():  # the user's rejection of a draw
                raise ValueError("rejected draw")
            return {"probs": torch.sigmoid(self.fc(z))}

    q, p = Q(), P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="prior")
    model = Model((KullbackLeibler(q, prior) - E(q, LogProb(p))).mean(), distributions=[q, p],
                  optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    x = torch.bernoulli(torch.full((16, 4), 0.5))
    tries, losses = [], []
    for _ in range(10):
        for t in range(50):
            try:
                losses.append(model.train({"x": x.clone()}))
                break
            except ValueError:
                continue
        tries.append(t + 1)
    return tries, torch.stack(losses)


def test_a_retry_after_a_rejected_draw_draws_anew_as_under_pixyz() -> None:
    """A second probe: when failed steps put the random states back, every retry drew the same rejected z and
    the loop never ended ([1, ..., 50, 50, 50] tries against Pixyz's [1, ..., 2, 1, 1])."""
    ref, ours = run_both(_retry_program)
    assert_same(ref, ours)
    assert max(ref[0]) > 1  # the program does retry


def test_a_failed_step_that_drew_from_numpy_says_it_could_not_put_it_back(tmp_path: Path) -> None:
    """numpy's state is only marked (copying it costs more than the rest of the step's bookkeeping): a step that
    drew from it and failed says so, in the error and when saved."""
    model = make_vae()

    def draws_then_fails(module: nn.Module, args: Any) -> None:
        np.random.rand()
        raise KeyboardInterrupt

    model.distributions[1].register_forward_pre_hook(draws_then_fails)
    with pytest.raises(KeyboardInterrupt) as info:
        model.train({"x": X[:8]})
    assert any("numpy's global generator" in note for note in info.value.__notes__)
    with pytest.warns(UserWarning, match=r"VAE.save: VAE.train \(step 1\) drew from numpy's global generator"):
        model.save(tmp_path / "c.pt")


# ----------------------------------------------------------------------------- F2: a GAN interrupted between steps
class _G(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(4, 2)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"x": self.net(z)}


class _D(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(), nn.Linear(8, 1), nn.Sigmoid())

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


def _gan() -> tuple[GAN, _G]:
    g = _G()
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    model = GAN((g * prior).marginalize_var("z"), _D(), optimizer_params={"lr": 1e-2},
                d_optimizer_params={"lr": 1e-2})
    return model, g


GAN_X = torch.randn(40, 2, generator=torch.Generator().manual_seed(5)) + 3


def _gan_weights(model: GAN) -> list[torch.Tensor]:
    return _weights(model.distributions, model.discriminator)


def _gan_run(path: Path, at: int | None) -> GAN:
    """3 epochs of 3 batches; the generator is called once in each discriminator step (odd calls) and once in each
    generator step (even calls); interrupted at its ``at``-th call, saved, resumed into a fresh GAN."""
    pyro.set_rng_seed(0)
    model, g = _gan()
    _Fault(g, at)
    try:
        model.fit({"x": GAN_X}, epochs=3, batch_size=16, progress=False)
        return model
    except KeyboardInterrupt:
        model.save(path)
    pyro.set_rng_seed(99)
    resumed, _ = _gan()
    resumed.load(path, resume=True)
    resumed.fit({"x": GAN_X}, epochs=3 - resumed.epoch, batch_size=16, progress=False)
    return resumed


@pytest.mark.parametrize("at", [3, 4, 8], ids=["discriminator step 2", "generator step 2",
                                               "generator step 4 (first of epoch 2)"])
def test_a_gan_interrupted_in_either_step_resumes_exactly(tmp_path: Path, at: int) -> None:
    """Interrupted in the generator's step, the batch's discriminator step had been taken, and the resumed run
    took it again (d_steps 10 for 9 batches, weights 8e-2 off); interrupted in the discriminator's step, after its
    draws, the random state was advanced (5e-2 off). The checkpoint now keeps that the batch's discriminator step
    is done, and the random states of the failed step's start."""
    full = _gan_run(tmp_path / "full.pt", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = _gan_run(tmp_path / "c.pt", at)
    assert (resumed.step, resumed.adversarial_loss.d_steps) == (full.step, full.adversarial_loss.d_steps) == (9, 9)
    assert _equal(_gan_weights(full), _gan_weights(resumed))
    assert full.history["train/d_loss"] == resumed.history["train/d_loss"]


def _pixyz_generator() -> Any:
    """The generator x = Linear(z) (4 -> 2) of the GAN programs below, of the library ``pixyz`` names in the program
    that calls it (Pixyz 0.3.3, or pyro_dgm under the harness's renamed import)."""
    from torch import nn
    from pixyz.distributions import Deterministic

    class G(Deterministic):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(4, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"x": self.net(z)}

    return G()


def _fixed_batch_gan_program() -> Any:
    """A GAN trained on one fixed batch, whose generator's optimizer fails once: the loop goes on to the next
    iteration, which takes both steps (a new iteration on the same batch is not a resumed one)."""
    import torch
    from torch import nn
    from pixyz.distributions import Deterministic, Normal
    from pixyz.models import GAN

    class D(Deterministic):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(2, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": torch.sigmoid(self.net(x))}

    class FailsOnce(torch.optim.Adam):
        calls = 0

        def step(self, closure=None):  # type: ignore[no-untyped-def]
            FailsOnce.calls += 1
            if FailsOnce.calls == 3:
                raise RuntimeError("a failing step")
            return super().step(closure)

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="p_{prior}")
    d = D()
    model = GAN((_pixyz_generator() * prior).marginalize_var("z"), d, optimizer=FailsOnce, optimizer_params={"lr": 1e-2},
                d_optimizer_params={"lr": 1e-2})
    x = torch.randn(16, 2) + 3
    out = []
    for _ in range(6):
        try:
            out.append(model.train({"x": x.clone()}))
        except RuntimeError:
            out.append(None)
    return out, d.net.weight


def test_a_gan_on_a_fixed_batch_after_a_failed_generator_step_takes_both_steps_as_under_pixyz() -> None:
    """A second probe: when the model skipped the discriminator step of a batch taken again after its generator
    step failed, a GAN trained on one fixed batch took one discriminator step less than Pixyz (0.0357 against
    -0.0405). The skip is now for a run resumed from a checkpoint only."""
    ref, ours = run_both(_fixed_batch_gan_program)
    assert_same(ref, ours)
    assert ours[0][2] is None and all(r is not None for r in ours[0][3:])


# ------------------------------------------------------------------- F3/F4: finiteness of the discriminator's step
def _sqrt_discriminator_program() -> Any:
    """A GAN whose discriminator reads a parameter ``a`` = 0 through sqrt(a ** 2): a finite loss, a NaN gradient."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic, Normal
    from pixyz.models import GAN

    class D(Deterministic):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(2, 1)
            self.a = nn.Parameter(torch.zeros(1))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": torch.sigmoid(self.net(x) + torch.sqrt(self.a ** 2))}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="p_{prior}")
    d = D()
    model = GAN((_pixyz_generator() * prior).marginalize_var("z"), d, optimizer_params={"lr": 1e-2},
                d_optimizer_params={"lr": 1e-2})
    model.train({"x": torch.randn(16, 2) + 3})
    return model


def test_a_nan_gradient_in_the_discriminator_step_raises_with_its_weights_untouched() -> None:
    """Pixyz's discriminator step turns ``a`` into NaN (its next steps then fail on NaN outputs); the step took it
    silently here too. It now raises NonFiniteGradientError naming the term, the discriminator and the step,
    before the discriminator's optimizer steps."""
    with pytest.raises(RuntimeError, match="between 0 and 1"):  # (Pixyz's: its first step's sigmoid outputs NaN)
        run_pixyz(_sqrt_discriminator_program)
    with pytest.raises(NonFiniteGradientError) as info:
        run_pyro_dgm(_sqrt_discriminator_program)
    assert "AdversarialJensenShannon" in str(info.value) and "step 1 of the discriminator D d(t|x)" in str(info.value)
    assert "in a (1 of 1 values)" in str(info.value) and "weights are unchanged" in str(info.value)


def test_the_discriminator_step_leaves_everything_as_it_was_when_it_raises_and_can_be_told_not_to_check() -> None:
    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(2, 1)
            self.a = nn.Parameter(torch.zeros(1))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": torch.sigmoid(self.net(x) + torch.sqrt(self.a ** 2))}

    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    model = GAN((_G() * prior).marginalize_var("z"), D(), d_optimizer_params={"lr": 1e-2})
    term, x = model.adversarial_loss, GAN_X[:16]
    before = _weights(model.discriminator)
    with pytest.raises(NonFiniteGradientError, match="step 1 of the discriminator"):
        term.loss_train({"x": x})
    assert _equal(before, _weights(model.discriminator)) and not term.d_optimizer.state and term.d_steps == 0
    with pytest.raises(NonFiniteGradientError, match="epoch 1, step 1 of the discriminator"):
        model.fit({"x": x}, epochs=1, progress=False)
    term.check_gradients = False  # Pixyz's step: the NaN goes into the weights
    term.loss_train({"x": x})
    assert torch.isnan(model.discriminator.a).all() and term.d_steps == 1


def test_a_nan_critic_loss_raises_before_the_critic_steps() -> None:
    """A NaN in the data gives a NaN critic loss (the critic's scores are not probabilities, so no range check
    caught it); Pixyz's and our critic step took it. It now raises NonFiniteLossError naming the term and the
    step, with the critic unchanged."""
    class Critic(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(2, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": self.net(x)}

    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), (_G() * prior).marginalize_var("z"), Critic())
    x = GAN_X[:16].clone()
    x[3, 0] = float("nan")
    before = _weights(w.discriminator)
    with pytest.raises(NonFiniteLossError, match=r"AdversarialWassersteinDistance W\^\{Adv\}.*the discriminator's "
                                                 r"training loss is nan at step 1 of the discriminator") as info:
        w.loss_train({"x": x})
    assert not isinstance(info.value, NonFiniteGradientError)
    assert _equal(before, _weights(w.discriminator)) and w.d_steps == 0
    w.loss_train({"x": GAN_X[:16]})
    assert w.d_steps == 1


# ----------------------------------------------------------------- F6: an infinite gradient under clip_grad_value
def _sqrt_loc_program(**clip: Any) -> Any:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.models import Model

        class P(Normal):
            def __init__(self):  # type: ignore[no-untyped-def]
                super().__init__(var=["x"], name="p")
                self.w = nn.Parameter(torch.zeros(1))

            def forward(self):  # type: ignore[no-untyped-def]
                return {"loc": torch.sqrt(self.w), "scale": torch.ones(1)}  # d loc / dw = inf at w = 0

        p = P()
        model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1}, **clip)
        loss = model.train({"x": torch.full((4, 1), 2.0)})
        return float(loss.detach()), p.w.detach().clone()
    return program


def test_an_infinite_gradient_clamped_by_clip_grad_value_steps_as_under_pixyz() -> None:
    """torch's clip_grad_value_ clamps an infinite gradient to the clip value and Pixyz takes that finite step
    (w = 0.1); the gradient check ran before clipping and refused the program."""
    program = _sqrt_loc_program(clip_grad_value=1.0)
    ours = run_pyro_dgm(program)
    assert_same(run_pixyz(program), ours)
    assert ours[1].item() == pytest.approx(0.1)


@pytest.mark.parametrize("clip", [{"clip_grad_norm": 1.0}, {}], ids=["clip_grad_norm", "no clipping"])
def test_an_infinite_gradient_is_still_refused_where_pixyzs_weights_become_nan_or_inf(clip: dict) -> None:
    program = _sqrt_loc_program(**clip)
    assert not math.isfinite(run_pixyz(program)[1].item())
    with pytest.raises(NonFiniteGradientError, match="step 1"):
        run_pyro_dgm(program)


def test_a_nan_gradient_under_clip_grad_value_still_raises() -> None:
    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], name="p")
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": torch.sqrt(self.w ** 2), "scale": torch.ones(1)}  # 0 * inf: NaN

    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], clip_grad_value=1.0)
    with pytest.raises(NonFiniteGradientError, match="step 1"):
        model.train({"x": torch.full((4, 1), 2.0)})
    assert p.w.item() == 0.0 and not model.optimizer.state


# ------------------------------------------------------------------------- F8: callbacks' errors, LBFGS
def test_a_callbacks_error_names_the_epoch_and_the_callback() -> None:
    def fails_at_two(model: Model, epoch: int, logs: Any) -> None:
        if epoch == 2:
            raise ValueError("a callback of the user's")

    model = make_vae()
    with pytest.raises(ValueError, match="a callback of the user's") as info:
        model.fit({"x": X}, epochs=3, batch_size=16, progress=False, callbacks=[lambda *a: None, fails_at_two])
    assert info.value.__notes__ == ["in fit: epoch 2, callback 2 of 2 (test_a_callbacks_error_names_the_epoch_and_"
                                    "the_callback.<locals>.fails_at_two), after the epoch ended"]
    assert model.epoch == 2


def _lbfgs_program() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Normal
    from pixyz.models import Model

    class P(Normal):
        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__(var=["x"], name="p")
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": self.w, "scale": torch.ones(1)}

    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.LBFGS)
    rng = torch.get_rng_state()
    try:
        model.train({"x": torch.full((4, 1), 2.0)})
    except TypeError as e:
        return str(e), p.w.item(), torch.equal(rng, torch.get_rng_state())
    return None


def test_lbfgs_is_a_type_error_naming_the_model_and_the_closure_it_needs() -> None:
    """Pixyz raises torch's ``TypeError: LBFGS.step() missing 1 required positional argument: 'closure'``; so did
    we. The TypeError now says why, before any weight changes."""
    message, w, same_rng = run_pixyz(_lbfgs_program)
    assert "closure" in message and w == 0.0
    message, w, same_rng = run_pyro_dgm(_lbfgs_program)
    assert message.startswith("Model: the optimizer LBFGS needs a closure") and "Model.train does not pass" in message
    assert w == 0.0 and same_rng


# --------------------------------------------------------------------------- F9: an interrupted save
def test_a_save_interrupted_while_its_temporary_file_is_created_leaves_no_file(tmp_path: Path,
                                                                                monkeypatch: Any) -> None:
    """``tempfile.mkstemp`` created the file before the ``try`` that removes it: a Ctrl-C in between left an empty
    ``.c.pt.*.tmp``. The file is now created inside the guarded block, under a name known before it exists."""
    atomic_torch_save({"a": torch.ones(1)}, tmp_path / "c.pt")
    real_open = os.open

    def open_then_interrupt(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt  # (the file exists now)
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)  # (tempfile.mkstemp's too)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.zeros(1)}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"], glob.glob(str(tmp_path / ".*"))
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["a"], torch.ones(1))


# ------------------------------------------------------------------- F10: a half-precision loss that overflowed
def _fp16_program(dtype: str, scale: float = 0.05) -> Any:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.models import ML

        D = getattr(torch, dtype)

        class N(Normal):
            def __init__(self):  # type: ignore[no-untyped-def]
                super().__init__(var=["x"], cond_var=["y"], name="p")
                self.l = nn.Linear(64, 64)

            def forward(self, y):  # type: ignore[no-untyped-def]
                return {"loc": self.l(y), "scale": torch.ones_like(y) * scale}

        p = N().to(D)
        model = ML(p, optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-4})
        g = torch.Generator().manual_seed(1)
        x = (torch.randn(8, 64, generator=g) * 3).to(D)
        y = torch.randn(8, 64, generator=g).to(D)
        loss = model.train({"x": x, "y": y})
        return loss, p.l.weight.detach()[0, :4].clone()
    return program


def test_a_float16_loss_that_overflowed_with_finite_gradients_steps_as_under_pixyz() -> None:
    """The summed log-density overflows float16 (|log p| > 65504) while every gradient is finite: Pixyz steps (its
    weights are a float64 run's to float16 precision); we raised NonFiniteLossError. We now step, with a warning."""
    program = _fp16_program("float16")
    ref = run_pixyz(program)
    with pytest.warns(RuntimeWarning, match="overflowed its dtype torch.float16 at step 1"):
        ours = run_pyro_dgm(program)
    assert torch.isinf(ours[0]) and ours[0].dtype == torch.float16
    assert_same(ref, ours, 1e-3, 1e-3)
    wide = run_pixyz(_fp16_program("float64"))[1]
    assert torch.allclose(ours[1].double(), wide, rtol=1e-2, atol=1e-3)


class _Weights(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k", ["overflow", "inf", "nan"])
def test_only_a_half_precision_overflow_with_finite_gradients_steps(dtype: torch.dtype, k: str) -> None:
    """A loss that overflowed float16/bfloat16 (finite gradients k) steps; an infinite gradient, a NaN, or an
    infinite float32 loss still raise NonFiniteLossError, with the weights untouched."""
    big = torch.finfo(dtype).max * 0.75
    values = {"overflow": [big, big], "inf": [1.0, math.inf], "nan": [1.0, math.nan]}[k]
    module = _Weights(dtype)
    model = Model(Dot(module), distributions=[module], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0})
    steps = k == "overflow" and dtype != torch.float32
    if steps:
        with pytest.warns(RuntimeWarning, match="overflowed its dtype"):
            loss = model.train({"k": torch.tensor(values, dtype=dtype)})
        assert torch.isinf(loss) and model.step == 1 and torch.equal(module.w, torch.ones(2, dtype=dtype))
        return
    with pytest.raises(NonFiniteLossError, match=f"training loss is {'nan' if k == 'nan' else 'inf'} at step 1"):
        model.train({"k": torch.tensor(values, dtype=dtype)})
    assert model.step == 0 and not model.optimizer.state
