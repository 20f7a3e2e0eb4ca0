"""Two threads training two independent models give, bit for bit, what each gives alone (issue 13, item 7).

pyro_dgm's own evaluation state (the memoizing scope of ``Loss.eval``, the term recorder, whether a call is the
outermost evaluation) is per thread, so ``Model.train`` and ``loss.eval`` may run in several threads on separate
models. The encoders draw their own ``z`` (no noise passed as data): each thread trains under its own generator
(:func:`pyro_dgm.utils.generator`, thread-local), so its draws do not depend on how the threads interleave. The
reference is the same program in one thread; every comparison is exact (Python floats of the same torch arithmetic).
Two kinds of draw are covered: the closed-form reparameterized Normal draw and, through a Laplace encoder, the
general path (the family's own sampler under the generator, with a Monte Carlo KL that draws again).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Laplace, Normal
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.models import Model
from pyro_dgm.utils import current_generator, generator

X_DIM, Z_DIM, H, N, STEPS = 16, 3, 16, 32, 25


def _encoder(family: type) -> Any:
    class Enc(family):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.h = nn.Linear(X_DIM, H)
            self.loc = nn.Linear(H, Z_DIM)
            self.scale = nn.Linear(H, Z_DIM)

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = torch.tanh(self.h(x))
            return {"loc": self.loc(h), "scale": nn.functional.softplus(self.scale(h)) + 1e-3}

    return Enc()


class _Dec(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(Z_DIM, H), nn.Tanh(), nn.Linear(H, X_DIM))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"probs": torch.sigmoid(self.net(z))}


def _build(seed: int, family: type = Normal) -> tuple[Model, Any, torch.Tensor]:
    """A VAE whose weights and data come from ``seed`` (a generator of its own): the model, its loss, the data."""
    init = torch.Generator().manual_seed(seed)
    enc, dec = _encoder(family), _Dec()
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.copy_(torch.randn(p.shape, generator=init) * 0.3)
    prior_family = Normal if family is Normal else Laplace
    prior = prior_family(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM],
                         name="p_{0}")
    kl = KullbackLeibler(enc, prior, analytical=family is Normal)  # Laplace: a Monte Carlo KL, a second draw
    loss = ((-dec.log_prob().expectation(enc)).named("rec") + kl.named("kl")).mean()
    model = Model(loss, distributions=[enc, dec], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    return model, loss, (torch.rand(N, X_DIM, generator=init) > 0.5).float()


def _run(model: Model, loss: Any, x: torch.Tensor, seed: int) -> list[tuple[float, dict[str, float]]]:
    """Train with the draws from a generator of ``seed``; each step's loss and terms as Python floats (exact)."""
    out = []
    with generator(torch.Generator().manual_seed(seed)):
        for _ in range(STEPS):
            value = model.train({"x": x})
            out.append((float(value), {k: float(v.mean()) for k, v in model.last_terms.items()}))
        # the evaluation entry used directly, with return_terms and return_dict, after training
        value, values, terms = loss.eval({"x": x}, return_dict=True, return_terms=True)
    out.append((float(value.detach()), {k: float(v.mean()) for k, v in terms.items()}
                | {"|z|": float(values["z"].detach().abs().sum())}))
    return out


def _train(seed: int, family: type = Normal) -> list[tuple[float, dict[str, float]]]:
    return _run(*_build(seed, family), seed)


def _in_threads(fns: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []
    start = threading.Barrier(len(fns))

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = fns[i]()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("family", [Normal, Laplace], ids=["closed-form-draw", "general-path-draw"])
def test_two_threads_match_one_thread_each_bit_for_bit(family: type) -> None:
    alone = [_train(1, family), _train(2, family)]
    assert alone[0] != alone[1]  # two different models: a swap between threads would show
    assert set(alone[0][0][1]) == {"rec", "kl"}
    assert _train(1, family) == alone[0]  # the draws depend on the seed only
    for _ in range(3):
        assert _in_threads([lambda: _train(1, family), lambda: _train(2, family)]) == alone


def test_threads_with_the_same_seed_give_the_same_numbers() -> None:
    """Two threads on the same seed: each reads its own generator, so neither takes numbers from the other's."""
    alone = _train(3)
    assert _in_threads([lambda: _train(3), lambda: _train(3)]) == [alone, alone]


@pytest.mark.parametrize("family", [Normal, Laplace], ids=["closed-form-draw", "general-path-draw"])
def test_training_under_a_generator_leaves_the_default_generator_alone(family: type) -> None:
    built = _build(4, family)  # nn.Linear's initialization draws from the default generator: before the snapshot
    state = torch.get_rng_state()
    _run(*built, 4)
    assert torch.equal(torch.get_rng_state(), state)


def test_loss_eval_in_four_threads_on_one_model_matches_serial() -> None:
    """Evaluation only (no optimizer), four threads on one loss at once, each with its data and its generator: each
    gets its own terms and values."""
    torch.manual_seed(0)
    enc, dec = _encoder(Normal), _Dec()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM], name="p_{0}")
    loss = ((-dec.log_prob().expectation(enc)).named("rec") + KullbackLeibler(enc, prior).named("kl")).mean()
    data = [{"x": (torch.rand(N, X_DIM) > 0.5).float()} for _ in range(4)]

    def ev(i: int) -> Any:
        out = []
        with generator(torch.Generator().manual_seed(i)):
            for _ in range(20):
                value, terms = loss.eval(data[i], return_terms=True)
                value.backward()  # a graph shared with another thread's evaluation would fail here
                out.append((float(value.detach()), {k: float(v.mean()) for k, v in terms.items()}))
        return out

    serial = [ev(i) for i in range(4)]
    assert serial[0] != serial[1]
    assert _in_threads([lambda i=i: ev(i) for i in range(4)]) == serial


def test_a_thread_does_not_inherit_the_generator_of_the_thread_that_starts_it() -> None:
    seen: list[Any] = []
    with generator(torch.Generator().manual_seed(0)):
        t = threading.Thread(target=lambda: seen.append(current_generator()))
        t.start()
        t.join()
        assert current_generator() is not None
    assert seen == [None]
