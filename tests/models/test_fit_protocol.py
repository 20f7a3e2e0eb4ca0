"""The boundary between ``fit`` and a model: fit takes steps through ``Model.train_step``/``test_step`` only, keeps
its per-call state to itself, and adds the epoch to a ``NonFiniteLossError`` where it catches it."""
from __future__ import annotations

import math
import pickle
from typing import Any, Mapping

import pytest
import torch
from dgm_fixtures import SqrtLoc
from torch import Tensor, nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.models import GAN, Model, NonFiniteGradientError, NonFiniteLossError


_Sqrt = SqrtLoc  # p(x|y) = N(sqrt(w y), 1): an infinite derivative in w at w y = 0


def _sqrt_model() -> tuple[Model, _Sqrt]:
    p = _Sqrt()
    return Model((-p.log_prob()).mean().named("nll"), distributions=[p], optimizer_params={"lr": 0.1}), p


def _batch(y: float, n: int = 3, x: float = 1.0) -> dict[str, Tensor]:
    return {"x": torch.full((n, 1), x), "y": torch.full((n, 1), y)}


# ------------------------------------------------------------------------------------------------ the error type
def test_the_error_names_the_epoch_once_and_survives_pickling() -> None:
    err = NonFiniteLossError("M: the training loss is nan at ", 7, " (non-finite term(s): 'kl'); loss: L")
    assert str(err) == "M: the training loss is nan at step 7 (non-finite term(s): 'kl'); loss: L"
    assert err.add_epoch(3) is err
    assert str(err) == "M: the training loss is nan at epoch 3, step 7 (non-finite term(s): 'kl'); loss: L"
    err.add_epoch(4)  # an outer fit does not rename it
    assert str(err).count("epoch") == 1 and err.epoch == 3 and err.step == 7
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NonFiniteLossError and str(back) == str(err) and (back.epoch, back.step) == (3, 7)
    plain = NonFiniteGradientError("a message of a user's own")  # no step: the text is kept as given
    assert str(plain.add_epoch(2)) == "a message of a user's own" and plain.epoch is None
    assert isinstance(plain, NonFiniteLossError) and isinstance(plain, FloatingPointError)


# ------------------------------------------------------------------------------------------------ epoch context
def test_fit_names_the_epoch_of_a_non_finite_gradient_and_train_alone_does_not() -> None:
    model, p = _sqrt_model()
    model.fit([_batch(1.0, x=2.0), _batch(1.0, x=2.0)], epochs=1, progress=False)  # epoch 1: steps 1 and 2
    w = p.w.detach().clone()
    with pytest.raises(NonFiniteGradientError, match=r"non-finite gradients at epoch 2, step 4 with a finite "
                                                     r"training loss 1\.41894"):
        model.fit([_batch(1.0, x=2.0), _batch(0.0)], epochs=1, progress=False)  # step 3 is fine, step 4 is not
    assert model.step == 3 and model.epoch == 1 and model.history["epoch"] == [1]
    assert not torch.equal(p.w, w)  # step 3 was taken
    with pytest.raises(NonFiniteGradientError, match=r"non-finite gradients at step 4 with"):
        model.train(_batch(0.0))  # outside fit: the step only


def test_fit_names_the_epoch_of_a_non_finite_test_loss() -> None:
    model, _ = _sqrt_model()
    test = {"x": torch.tensor([[1.0], [math.inf]]), "y": torch.ones(2, 1)}
    with pytest.raises(NonFiniteLossError, match=r"the test loss is inf at epoch 1, step 2 \(non-finite term\(s\): "
                                                 r"'nll'\)"):
        model.fit([_batch(1.0), _batch(2.0)], epochs=3, test_data=[test], progress=False)
    assert model.step == 2 and model.epoch == 0 and model.history == {}


# ------------------------------------------------------------------------------------------------ the protocol
class _Doubled(Model):
    """A model whose train_step/test_step report one more term: the loss times two."""

    def train_step(self, x_dict: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        loss, terms = super().train_step(x_dict, **kwargs)
        return loss, {**terms, "double": 2 * loss}

    def test_step(self, x_dict: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        loss, terms = super().test_step(x_dict, **kwargs)
        return loss, {**terms, "double": 2 * loss}


def test_fit_takes_its_numbers_from_the_steps_and_adds_no_state_to_the_model() -> None:
    p = _Sqrt()
    model = _Doubled((-p.log_prob()).mean().named("nll"), distributions=[p], optimizer_params={"lr": 0.1})
    model.train(_batch(1.0))  # the attributes a step creates lazily exist from here on
    before = set(vars(model))
    seen: list[set[str]] = []
    batches = [_batch(1.0, 2), _batch(2.0, 4)]
    history = model.fit(batches, epochs=2, test_data=[_batch(3.0, 5)], progress=False,
                        callbacks=[lambda m, e, logs: seen.append(set(vars(m)))])
    assert set(vars(model)) == before and seen == [before, before]
    assert history["train/double"] == [2 * v for v in history["train_loss"]]
    assert history["test/double"] == [2 * v for v in history["test_loss"]]
    assert model.stop_training is False and model.tb_writer is None


def test_gan_fit_history_is_the_row_weighted_mean_of_its_train_and_test_calls() -> None:
    class Gen(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"x": self.net(z)}

    class Disc(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"t": self.net(x)}

    def gan() -> GAN:
        torch.manual_seed(5)
        prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
        return GAN((Gen() * prior).marginalize_var("z"), Disc(), optimizer_params={"lr": 1e-2},
                   d_optimizer_params={"lr": 1e-2})

    torch.manual_seed(0)
    x, x_test = torch.randn(30, 2) + 2, torch.randn(10, 2) + 2
    fitted, twin = gan(), gan()
    torch.manual_seed(1)
    history = fitted.fit({"x": x}, epochs=1, batch_size=20, shuffle=False, test_data={"x": x_test},
                         progress=False)
    torch.manual_seed(1)
    steps = [twin.train({"x": x[s:s + 20]}) for s in (0, 20)]  # batches of 20 and 10 rows
    test_loss, test_d_loss = twin.test({"x": x_test})

    def mean(values: list[Tensor]) -> float:
        return float((20 * values[0] + 10 * values[1]) / 30)

    assert history["train_loss"] == pytest.approx([mean([s[0] for s in steps])], rel=1e-6)
    assert history["train/d_loss"] == pytest.approx([mean([s[1] for s in steps])], rel=1e-6)
    assert history["test_loss"] == pytest.approx([float(test_loss)], rel=1e-6)
    assert history["test/d_loss"] == pytest.approx([float(test_d_loss)], rel=1e-6)
    assert fitted.step == twin.step == 2 and fitted.loss_cls.d_steps == 2
