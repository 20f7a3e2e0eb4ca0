"""Two threads training two independent models give, bit for bit, what each gives alone (issue 13, item 7).

pyro_dgm's own evaluation state (the memoizing scope of ``Loss.eval``, the term recorder, whether a call is the
outermost evaluation) is per thread, so ``Model.train`` and ``loss.eval`` may run in several threads on separate
models. The draws come from torch's random generator, which is one per process: so that each thread's numbers do not
depend on how the threads interleave, the reparameterization noise is data here (``eps``, drawn beforehand from a
``torch.Generator`` per model) and the encoder's draw is a :class:`Deterministic` ``z = loc + scale * eps``; the
reference is the same program in one thread, with torch's own arithmetic, so the comparison is exact.
"""
from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Deterministic, Normal
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.models import Model

X_DIM, Z_DIM, H, N, STEPS = 16, 3, 16, 32, 25


class _Enc(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.h = nn.Linear(X_DIM, H)
        self.loc = nn.Linear(H, Z_DIM)
        self.scale = nn.Linear(H, Z_DIM)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = torch.tanh(self.h(x))
        return {"loc": self.loc(h), "scale": nn.functional.softplus(self.scale(h)) + 1e-3}


class _Reparam(Deterministic):
    """z = loc(x) + scale(x) * eps through the encoder's network (a second call of it: the memoizer's work)."""

    def __init__(self, enc: _Enc) -> None:
        super().__init__(var=["z"], cond_var=["x", "eps"], name="r")
        self.enc = enc

    def forward(self, x, eps):  # type: ignore[no-untyped-def]
        params = self.enc.forward(x)
        return {"z": params["loc"] + params["scale"] * eps}


class _Dec(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(Z_DIM, H), nn.Tanh(), nn.Linear(H, X_DIM))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"probs": torch.sigmoid(self.net(z))}


def _train(seed: int) -> list[tuple[float, dict[str, float]]]:
    """Build a VAE from ``seed`` (its own generator: weights, data and noise), train it, return each step's loss and
    terms as Python floats (exact)."""
    gen = torch.Generator().manual_seed(seed)
    enc, dec = _Enc(), _Dec()
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM], name="p_{0}")
    r = _Reparam(enc)
    loss = ((-dec.log_prob().expectation(r)).named("rec") + KullbackLeibler(enc, prior).named("kl")).mean()
    model = Model(loss, distributions=[enc, dec], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    x = (torch.rand(N, X_DIM, generator=gen) > 0.5).float()
    out = []
    for _ in range(STEPS):
        eps = torch.randn(N, Z_DIM, generator=gen)
        value = model.train({"x": x, "eps": eps})
        out.append((float(value), {k: float(v.mean()) for k, v in model.last_terms.items()}))
    # the evaluation entry used directly, with return_terms and return_dict, after training
    value, values, terms = loss.eval({"x": x, "eps": eps}, return_dict=True, return_terms=True)
    out.append((float(value.detach()), {k: float(v.mean()) for k, v in terms.items()} | {"|z|": float(values["z"].detach().abs().sum())}))
    return out


def _in_threads(seeds: list[int]) -> list[Any]:
    results: list[Any] = [None] * len(seeds)
    errors: list[BaseException] = []
    start = threading.Barrier(len(seeds))

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = _train(seeds[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_two_threads_match_one_thread_each_bit_for_bit() -> None:
    alone = [_train(1), _train(2)]
    assert alone[0] != alone[1]  # two different models: a swap between threads would show
    assert set(alone[0][0][1]) == {"rec", "kl"}
    for _ in range(3):
        assert _in_threads([1, 2]) == alone


def test_loss_eval_in_four_threads_on_one_model_matches_serial() -> None:
    """Evaluation only (no optimizer), four threads on one loss at once: each gets its own terms and values."""
    torch.manual_seed(0)
    enc, dec = _Enc(), _Dec()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM], name="p_{0}")
    loss = ((-dec.log_prob().expectation(_Reparam(enc))).named("rec") + KullbackLeibler(enc, prior).named("kl")).mean()
    data = [{"x": (torch.rand(N, X_DIM) > 0.5).float(), "eps": torch.randn(N, Z_DIM)} for _ in range(4)]

    def ev(d: dict[str, torch.Tensor]) -> Any:
        out = []
        for _ in range(20):
            value, terms = loss.eval(d, return_terms=True)
            value.backward()  # a graph shared with another thread's evaluation would fail here
            out.append((float(value.detach()), {k: float(v.mean()) for k, v in terms.items()}))
        return out

    serial = [ev(d) for d in data]
    results: list[Any] = [None] * 4
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = ev(data[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial
