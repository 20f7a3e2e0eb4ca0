"""Reliability, round 12: faults injected by probe p140.

- A ``Deterministic`` that draws with ``generator=current_generator()`` (as the docs recommend) was memoized within
  one evaluation when a generator was set with :func:`pyro_dgm.utils.generator`, so two uses got one draw, and
  re-run (a draw at each use, Pixyz's semantics) when none was set: the memoizer watched the global generators
  only.
- A ``fit`` run by a callback of a ``fit`` of the same model made the outer ``fit`` fail with a bare ``KeyError``
  after the epoch, and the checkpoint its ``ModelCheckpoint`` had queued was never written.
- An error in an ``IterativeLoss`` step did not say at which time step it came.
- A NaN in a network's input was reported as the network's invalid parameters, without naming the input.
- After ``fit`` raised in an epoch, steps taken by hand were counted as steps of that epoch by every later save.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from torch import nn


def _noisy_deterministic(calls: list[int]) -> object:
    from pyro_dgm.distributions import Deterministic
    from pyro_dgm.utils import current_generator

    class Noisy(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(1)
            return {"h": x + torch.randn(x.shape, generator=current_generator())}

    return Noisy()


def test_a_deterministic_drawing_from_the_thread_generator_draws_at_each_use() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Expectation as E
    from pyro_dgm.losses import LogProb
    from pyro_dgm.utils import generator

    calls: list[int] = []
    f = _noisy_deterministic(calls)
    p = Normal(loc="h", scale=1., var=["y"], cond_var=["h"], name="p")
    loss = (E(f, LogProb(p)).named("t1") + E(f, LogProb(p)).named("t2")).mean()
    x, y = torch.zeros(4, 3), torch.zeros(4, 3)
    with generator(torch.Generator().manual_seed(0)):
        _, terms = loss.eval({"x": x, "y": y}, return_terms=True)
    assert len(calls) == 2  # f ran at each use (was 1: the first draw reused)
    g = torch.Generator().manual_seed(0)  # the two draws, in the order the terms are evaluated
    for name in ("t1", "t2"):
        h = x + torch.randn(x.shape, generator=g)
        expected = torch.distributions.Normal(h, 1.).log_prob(y).sum(-1)
        torch.testing.assert_close(terms[name], expected)


def test_a_deterministic_without_randomness_is_still_run_once_under_a_generator() -> None:
    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation as E
    from pyro_dgm.losses import LogProb
    from pyro_dgm.utils import generator

    calls: list[int] = []

    class Shift(Deterministic):
        memoizable = True  # opts in to sharing one pass between uses (what this test is about)

        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(1)
            return {"h": x + 1}

    f = Shift()
    p = Normal(loc="h", scale=1., var=["y"], cond_var=["h"], name="p")
    loss = (E(f, LogProb(p)) + E(f, LogProb(p))).mean()
    x, y = torch.zeros(4, 3), torch.ones(4, 3)
    with generator(torch.Generator().manual_seed(0)):
        value = loss.eval({"x": x, "y": y})
    assert len(calls) == 1  # the memoizer reuses the pass that drew nothing
    torch.testing.assert_close(value, 2 * torch.distributions.Normal(x + 1, 1.).log_prob(y).sum(-1).mean())


def _model() -> object:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import Model

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], name="p")
            self.m = nn.Parameter(torch.zeros(2))
            self.fail_at: int | None = None
            self.calls = 0

        def forward(self) -> dict[str, torch.Tensor]:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("a transient failure")
            return {"loc": self.m, "scale": torch.ones(2)}

    p = P()
    return Model((-p.log_prob()).mean(), distributions=[p], optimizer_params={"lr": 0.1}), p


def test_fit_in_a_callback_of_fit_of_the_same_model_writes_the_queued_checkpoint(tmp_path: Path) -> None:
    from pyro_dgm.models import Model
    from pyro_dgm.models.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    model, _ = _model()
    data = {"x": torch.randn(16, 2)}
    steps_after_epoch_1: list[int] = []

    def finetune(m: object, epoch: int, logs: dict) -> None:
        if epoch == 1:
            m.fit(data, epochs=1, batch_size=8, progress=False, shuffle=False, callbacks=[lambda *a: None])
            steps_after_epoch_1.append(m.step)

    path = tmp_path / "ckpt.pt"
    model.fit(data, epochs=2, batch_size=8, progress=False, shuffle=False,
              callbacks=[ModelCheckpoint(str(path)), finetune])  # (was: KeyError(id(model)) after epoch 1)
    assert model.step == 6  # 2 batches in each of the outer epochs and in the nested one
    assert steps_after_epoch_1 == [4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint at an epoch's end: no unfinished epoch to warn of
        loaded, _ = _model()
        loaded.load(str(path), resume=True)
    assert loaded.step == model.step  # the last checkpoint: the outer epoch 2's (every epoch's was written)
    torch.testing.assert_close(loaded.distributions[0].m, model.distributions[0].m)
    assert isinstance(loaded, Model)


def _encoder(features: int) -> object:
    """q(z|x) with a linear network of ``features`` inputs."""
    from pyro_dgm.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(features, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(x), "scale": torch.ones(2)}

    return Q()


class _validating:
    """torch's argument validation on inside (the suite may run with it off), as before after."""

    def __enter__(self) -> None:
        self.before = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(True)

    def __exit__(self, *exc: object) -> None:
        torch.distributions.Distribution.set_default_validate_args(self.before)


def test_an_error_in_an_iterative_loss_names_the_time_step() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, LogProb

    step = LogProb(Normal(loc="z", scale=1., var=["y"], cond_var=["z"], name="p")).expectation(_encoder(2)).mean()
    loss = IterativeLoss(step, max_iter=6, series_var=["x", "y"])
    x, y = torch.randn(6, 4, 2), torch.randn(6, 4, 2)
    x[3, 1, 0] = float("nan")
    with _validating():
        with pytest.raises(ValueError, match="invalid parameters") as info:
            loss.eval({"x": x, "y": y})
    assert "(in IterativeLoss, at time step t=3 of 6)" in info.value.__notes__
    assert "(the input 'x' holds NaN or infinite entries, the first at index [1, 0] of 'x')" in str(info.value)


def test_an_error_slicing_an_iterative_loss_step_names_the_time_step() -> None:
    from pyro_dgm.losses import IterativeLoss, Parameter

    class BatchFirst(IterativeLoss):  # a subclass slicing time from the second dim (Pixyz's hook)
        def slice_step_fn(self, t: int, x: dict) -> dict:
            return {k: v[:, t] for k, v in x.items()}

    loss = BatchFirst(Parameter("x_t").mean(), max_iter=4, series_var=["x_t"])
    with pytest.raises(IndexError) as info:  # its series has 3 steps in dim 1
        loss.eval({"x_t": torch.zeros(2, 3)})
    assert "(in IterativeLoss, at time step t=3 of 4)" in info.value.__notes__


def test_a_nan_in_a_network_input_is_named_with_its_index() -> None:
    from pyro_dgm.distributions import Normal

    x = torch.rand(8, 4)
    x[5, 1] = float("nan")
    said = "(the input 'x' holds NaN or infinite entries, the first at index [5, 1] of 'x')"
    q = _encoder(4)
    for how, call in [("sample", lambda: q.sample({"x": x})), ("set_dist", lambda: q.set_dist({"x": x})),
                      ("Pyro guide", lambda: pyro.poutine.trace(q.guide).get_trace(x=x))]:
        with _validating(), pytest.raises(ValueError, match=r"q\(z\|x\): invalid parameters") as info:
            call()
        assert said in str(info.value), how  # (in the message: Pyro's trace raises a new error of the message)
    for x in (torch.zeros(2, 1), torch.zeros(2, 1).to_sparse()):  # no NaN in the input (a sparse one too): no line
        with _validating(), pytest.raises(ValueError, match="invalid parameters") as info:
            Normal(loc="x", scale=-1., var=["z"], cond_var=["x"], name="q").sample({"x": x})
        assert "NaN or infinite" not in str(info.value)


def _failed_fit() -> tuple[object, torch.Tensor]:
    """A model whose fit raised at the third step of its first epoch (after 2 steps), and the data."""
    torch.manual_seed(0)
    model, p = _model()
    p.fail_at = 3
    x = torch.randn(16, 2)
    with pytest.raises(RuntimeError, match="a transient failure"):
        model.fit({"x": x}, epochs=1, batch_size=4, progress=False, shuffle=False)
    return model, x


@pytest.mark.parametrize("manual_steps", [0, 3])
def test_steps_taken_by_hand_after_a_failed_fit_are_not_the_epochs(tmp_path: Path, manual_steps: int) -> None:
    model, x = _failed_fit()
    assert model.step == 2
    for _ in range(manual_steps):
        model.train({"x": x})
    path = os.path.join(tmp_path, "a.pt")
    model.save(path)
    saved = torch.load(path, weights_only=False)
    if manual_steps:  # (was: 5 steps into epoch 1, the 3 later steps counted as fit's; a load warned so)
        assert saved["epoch_steps"] == 0 and "epoch_resume" not in saved
    else:  # saved right after the failure (a Ctrl-C's handler): the unfinished epoch resumes, as before
        assert saved["epoch_steps"] == 2 and saved["epoch_resume"]["steps"] == 2


def test_a_fit_failing_before_its_epoch_leaves_the_earlier_failed_epoch_as_it_was(tmp_path: Path) -> None:
    model, x = _failed_fit()
    for _ in range(2):
        model.train({"x": x})
    with pytest.raises(ValueError):  # refused before its first epoch began (a batch size of 0)
        model.fit({"x": x}, epochs=1, batch_size=0, progress=False)
    path = os.path.join(tmp_path, "a.pt")
    model.save(path)  # (was: 4 steps into epoch 1, the hand steps counted once the second fit had raised)
    assert torch.load(path, weights_only=False)["epoch_steps"] == 0


def test_a_class_index_out_of_an_embeddings_range_is_named_with_its_range() -> None:
    from pyro_dgm.distributions import Normal

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.emb = nn.Embedding(3, 2)

        def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.emb(y), "scale": torch.ones(2)}

    p, y = P(), torch.tensor([0, 5])
    for call in (lambda: p.sample({"y": y}), lambda: pyro.poutine.trace(p.model).get_trace(x=torch.zeros(2, 2), y=y)):
        with pytest.raises(IndexError, match="index out of range") as info:  # (torch's error, its type kept)
            call()
        note, = info.value.__notes__
        assert "'y' holds integers from 0 to 5: an index out of the range of a lookup" in note
        assert "convert with" not in note  # (was: told to convert the class indices to float32)
    assert p.sample({"y": torch.tensor([2])})["x"].shape == (1, 2)  # an index in range is drawn


def test_a_fit_in_a_callback_leaves_the_outer_fits_stop_and_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    class Writer:  # (a stand-in for tensorboard's SummaryWriter)
        def __init__(self, log_dir: str | None = None) -> None:
            self.closed = False

        def add_scalar(self, *args: object, **kwargs: object) -> None:
            pass

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    board = types.ModuleType("torch.utils.tensorboard")
    board.SummaryWriter = Writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    torch.manual_seed(0)
    model, _ = _model()
    data = {"x": torch.randn(16, 2)}
    seen: list[tuple[int, bool]] = []

    def stop(m: object, epoch: int, logs: dict) -> None:  # early stopping: ends fit after this epoch
        m.stop_training = True

    def finetune(m: object, epoch: int, logs: dict) -> None:
        m.fit(data, epochs=1, batch_size=8, progress=False)

    def look(m: object, epoch: int, logs: dict) -> None:
        seen.append((epoch, m.tb_writer is not None and not m.tb_writer.closed))

    history = model.fit(data, epochs=4, batch_size=8, progress=False, callbacks=[stop, finetune, look],
                        log_dir="unused")
    assert history["epoch"] == [1]  # (was: 4 epochs, the stop lost when the inner fit began)
    assert seen == [(1, True)]  # the outer fit's writer, still open (was: None after the inner fit)


def _torch_draw(g: torch.Generator, shape: torch.Size) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def _numpy_draw(g: object, shape: torch.Size) -> torch.Tensor:
    return torch.as_tensor(g.standard_normal(tuple(shape)), dtype=torch.float32)


def _python_draw(g: object, shape: torch.Size) -> torch.Tensor:
    return torch.tensor([g.gauss(0., 1.) for _ in range(shape.numel())]).reshape(shape)


GIVEN = {  # a generator handed to the forward as an argument of eval: how the forward finds it, how it draws
    "torch.Generator": (lambda: torch.Generator().manual_seed(0), lambda r: r, _torch_draw),
    "numpy Generator": (lambda: __import__("numpy").random.default_rng(0), lambda r: r, _numpy_draw),
    "random.Random": (lambda: __import__("random").Random(0), lambda r: r, _python_draw),
    "in a list": (lambda: [torch.Generator().manual_seed(0)], lambda r: r[0], _torch_draw),
    "in a dict": (lambda: {"g": torch.Generator().manual_seed(0)}, lambda r: r["g"], _torch_draw),
    "numpy bit generator": (lambda: __import__("numpy").random.PCG64(0),
                            lambda r: __import__("numpy").random.Generator(r), _numpy_draw),
}


def test_a_generator_without_a_state_given_to_eval_is_not_refused() -> None:
    import random

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation as E
    from pyro_dgm.losses import LogProb

    class Noisy(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor, rng: object = None) -> dict[str, torch.Tensor]:
            return {"h": x + _python_draw(rng, x.shape)}

    p = Normal(loc="h", scale=1., var=["y"], cond_var=["h"], name="p")
    loss = (E(Noisy(), LogProb(p)) + E(Noisy(), LogProb(p))).mean()
    value = loss.eval({"x": torch.zeros(4, 3), "y": torch.zeros(4, 3)}, rng=random.SystemRandom())
    assert torch.isfinite(value)  # (was: NotImplementedError, a SystemRandom has no state to read)


@pytest.mark.parametrize("kind", list(GIVEN))
def test_a_deterministic_drawing_from_a_generator_given_to_eval_draws_at_each_use(kind: str) -> None:
    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation as E
    from pyro_dgm.losses import LogProb

    make, find, draw = GIVEN[kind]
    draws: list[torch.Tensor] = []

    class Noisy(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor, rng: object = None) -> dict[str, torch.Tensor]:
            draws.append(draw(find(rng), x.shape))
            return {"h": x + draws[-1]}

    f = Noisy()
    p = Normal(loc="h", scale=1., var=["y"], cond_var=["h"], name="p")
    loss = (E(f, LogProb(p)).named("t1") + E(f, LogProb(p)).named("t2")).mean()
    x, y = torch.zeros(4, 3), torch.zeros(4, 3)
    _, terms = loss.eval({"x": x, "y": y}, return_terms=True, rng=make())
    assert len(draws) == 2 and not torch.equal(draws[0], draws[1])  # (was: one run, its draw used twice)
    for name, eps in zip(("t1", "t2"), draws):
        torch.testing.assert_close(terms[name], torch.distributions.Normal(x + eps, 1.).log_prob(y).sum(-1))
