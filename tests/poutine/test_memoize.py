"""The memoizing handler: one encoder pass per scope, never stale, identical results with and without it."""
from __future__ import annotations

import collections
import contextlib
import copy
import gc
import math
import weakref

import pyro
import pyro.poutine as poutine
import pytest
import torch
from dgm_fixtures import Decoder
from pyro.infer import SVI
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import ELBO, Expectation, KullbackLeibler, LogProb
from pyro_dgm.models import Model
from pyro_dgm.poutine import get_cache_maxsize, memoize, set_cache_maxsize


class Encoder(Normal):
    """q(z|x) counting its forward passes; optional dropout."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(4, 4)
        self.drop = nn.Dropout(dropout)
        self.calls = 0

    def forward(self, x, scale=1.0):  # type: ignore[no-untyped-def]
        self.calls += 1
        h = self.drop(self.fc(x))
        return {"loc": h[:, :2], "scale": scale * nn.functional.softplus(h[:, 2:]) + 1e-3}


@pytest.fixture(autouse=True)
def _restore_maxsize():  # type: ignore[no-untyped-def]
    size = get_cache_maxsize()
    yield
    set_cache_maxsize(size)


@pytest.fixture
def vae():  # type: ignore[no-untyped-def]
    q, p = Encoder(), Decoder(x_dim=4, z_dim=2)  # p: the shared decoder
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    x = torch.bernoulli(torch.full((6, 4), 0.5))
    return q, p, prior, x


def _mc_loss(q, p, prior):  # type: ignore[no-untyped-def]
    return -ELBO(p * prior, q).mean()  # samples q(z|x) and scores it: the encoder is asked twice


def test_an_mc_elbo_evaluation_runs_the_encoder_once_with_memoization_twice_without(vae) -> None:
    q, p, prior, x = vae
    loss = _mc_loss(q, p, prior)
    loss.eval({"x": x})
    assert q.calls == 1
    set_cache_maxsize(0)
    q.calls = 0
    loss.eval({"x": x})
    assert q.calls == 2


def test_losses_and_gradients_are_identical_with_and_without(vae) -> None:
    q, p, prior, x = vae
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    params = list(q.parameters()) + list(p.parameters())
    results = []
    for size in (128, 0):
        set_cache_maxsize(size)
        pyro.set_rng_seed(7)
        value = loss.eval({"x": x})
        grads = torch.autograd.grad(value, params)
        results.append((value.detach(), grads))
    (v1, g1), (v0, g0) = results
    assert torch.equal(v1, v0)
    assert all(torch.allclose(a, b) for a, b in zip(g1, g0))


def test_the_same_tensor_across_optimizer_steps_is_never_stale(vae) -> None:
    # Pixyz 0.3.3 returns the previous step's parameters here and fails with "backward through the graph a second
    # time"; a scope lasts one evaluation, so each step runs the encoder once on the updated weights
    q, p, prior, x = vae
    model = Model(_mc_loss(q, p, prior), distributions=[p, q], optimizer_params={"lr": 0.1})
    for step in range(3):
        before = q.fc.weight.detach().clone()
        model.train({"x": x})
        assert q.calls == step + 1
        assert not torch.equal(before, q.fc.weight)


def test_an_svi_step_memoizes_within_the_step(vae) -> None:
    q, p, prior, x = vae
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 1e-2}), loss=_mc_loss(q, p, prior))
    svi.step(x=x)
    svi.step(x=x)
    assert q.calls == 2


def test_in_place_changes_mode_switches_grad_mode_and_kwargs_miss_the_cache(vae) -> None:
    q, _, _, x = vae
    x = x.clone()
    with memoize():
        a = q.get_params({"x": x})["loc"]
        assert q.get_params({"x": x})["loc"] is a and q.calls == 1  # a hit: the same tensors
        x.add_(1.0)  # in place: a new version, a new key
        b = q.get_params({"x": x})["loc"]
        assert q.calls == 2 and not torch.equal(a, b)
        q.eval()
        q.get_params({"x": x})
        assert q.calls == 3
        q.train()
        with torch.no_grad():
            q.get_params({"x": x})
        assert q.calls == 4
        q.get_params({"x": x}, scale=2.0)
        assert q.calls == 5
        assert q.get_params({"x": x})["loc"] is b  # the original entry is still there


def _change(q: Encoder, how: str) -> None:
    """One change to ``q``'s network that an entry made before it must not survive."""
    if how == "weight in place":
        with torch.no_grad():
            q.fc.weight.mul_(2.0)
    elif how == "submodule replaced":
        q.fc = nn.Linear(4, 4)
    elif how == "parameter replaced":
        q.fc.bias = nn.Parameter(q.fc.bias.detach() + 1.0)
    elif how == "forward hook added":
        q.fc.register_forward_hook(lambda m, i, o: 2 * o)
    elif how == "layer appended":
        q.drop.add_module("extra", nn.Identity())
    elif how == "bias slot filled":  # (the slot held None: a hypernetwork gives the bias later)
        q.fc.bias = nn.Parameter(torch.ones(4))
    elif how == "vector_to_parameters":  # (assigns each parameter's .data: no new version)
        vector_to_parameters(parameters_to_vector(q.parameters()).detach() * 3, q.parameters())


@pytest.mark.parametrize("how", ["weight in place", "submodule replaced", "parameter replaced", "forward hook added",
                                 "layer appended", "bias slot filled", "vector_to_parameters"])
def test_a_network_run_at_many_inputs_in_one_scope_answers_for_its_weights_of_each_run(vae, how: str) -> None:
    # A sequence model runs one network at a new input each time step, and the scope checks each new entry against
    # the network's state of that network's last entry (reused while it holds). After a change between two inputs,
    # the entry made after it answers (the scope knows the new state), and the one made before it does not; nor
    # does the later one after a further change.
    q, _, _, x = vae
    x1, x2 = x, x + 1.0
    if how == "bias slot filled":
        q.fc.bias = None
    with memoize():
        before = q.get_params({"x": x1})["loc"]
        _change(q, how)
        after = q.get_params({"x": x2})["loc"]
        assert q.calls == 2
        assert q.get_params({"x": x2})["loc"] is after and q.calls == 2  # made after the change: a hit
        again = q.get_params({"x": x1})["loc"]  # made before the change: runs again, with the new weights
        assert q.calls == 3 and again is not before
        with torch.no_grad():
            for w in q.parameters():
                w.add_(0.5)
        later = q.get_params({"x": x2})["loc"]  # made after the first change, before this one: runs again
        assert q.calls == 4 and later is not after
    with torch.no_grad():
        for w in q.parameters():
            w.sub_(0.5)
        fresh = q.get_params({"x": x1})["loc"]
    torch.testing.assert_close(again.detach(), fresh, rtol=0, atol=1e-6)
    if how != "layer appended":  # (an appended layer that the forward does not use changes no value)
        assert not torch.equal(before.detach(), fresh)


def test_a_scope_around_a_loop_frees_the_networks_it_drops() -> None:
    # A scope the user opens around a loop that makes a network per task (a copy, used once) keeps none of them
    # alive: an entry holds the network's parameters only while it can answer (the cache's size bounds them).
    set_cache_maxsize(2)
    q = Encoder()
    refs = []
    with memoize():
        for _ in range(10):
            task = copy.deepcopy(q)
            with torch.no_grad():
                task.get_params({"x": torch.randn(3, 4)})
            refs.append(weakref.ref(task))
            del task
        gc.collect()
        assert sum(r() is not None for r in refs) <= 2  # (the two entries the cache may still hold)


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("keywords", [True, False], ids=["forward(**inputs)", "forward(h)"])
def test_inputs_freed_within_a_scope_never_answer_a_later_tensor(grad: bool, keywords: bool) -> None:
    # The key holds the ids of the inputs; a per-step temporary (an IterativeLoss slice) freed within the scope
    # leaves its id to the next step's tensor. The scope must keep every input alive, keyword ones included
    # (a forward(**inputs), as TD-VAE's): each score is the closed form of its own input.
    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["h"], name="p")

        def _params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": 2.0 * h, "scale": torch.ones_like(h)}

    class ByKeyword(P):
        def forward(self, **inputs):  # type: ignore[no-untyped-def]
            return self._params(inputs["h"])

    class Positional(P):
        def forward(self, h):  # type: ignore[no-untyped-def]
            return self._params(h)

    p = ByKeyword() if keywords else Positional()
    z = torch.zeros(3, 1)
    with torch.set_grad_enabled(grad), memoize():
        for i in range(40):
            h = torch.full((3, 1), float(i))
            got = p.get_log_prob({"h": h, "z": z})
            want = torch.distributions.Normal(2.0 * h, 1.0).log_prob(z).sum(-1)
            torch.testing.assert_close(got, want, msg=f"step {i}: a stale forward pass answered a new tensor")
            del h, got


@pytest.mark.parametrize("container", ["tuple", "namedtuple", "list", "dict"])
def test_an_in_place_change_inside_a_container_input_is_a_new_key(container: str) -> None:
    # an RNN's state (h, c) given as one variable: a change of h in place is a new key, as for a plain tensor
    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["hc"], name="q")

        def forward(self, hc):  # type: ignore[no-untyped-def]
            h, c = (hc["h"], hc["c"]) if isinstance(hc, dict) else hc
            return {"loc": h + c, "scale": torch.ones_like(h)}

    q, h, c, z = Q(), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2)
    hc = {"tuple": (h, c), "namedtuple": collections.namedtuple("State", "h c")(h, c), "list": [h, c],
          "dict": {"h": h, "c": c}}[container]
    with memoize():
        q.get_log_prob({"hc": hc, "z": z})
        h.add_(1.0)
        got = q.get_log_prob({"hc": hc, "z": z})
    torch.testing.assert_close(got, torch.distributions.Normal(h + c, 1.0).log_prob(z).sum(-1))


def test_an_optimizer_step_ends_what_a_scope_around_a_training_loop_cached() -> None:
    # a scope opened around several steps: each step's pass uses the parameters the optimizer just changed. The
    # gradients are set by hand, so no backward pass goes through the cached entries (that drops them too, see the
    # LBFGS test below): the optimizer's step alone must end them.
    q, x, z = Encoder(), torch.randn(5, 4), torch.randn(5, 2)
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    with memoize():
        for _ in range(3):
            loss = -q.get_log_prob({"x": x, "z": z}).mean()
            params = q.forward(x)
            want = -torch.distributions.Normal(params["loc"], params["scale"]).log_prob(z).sum(-1).mean()
            torch.testing.assert_close(loss, want)
            for t in q.parameters():
                t.grad = torch.ones_like(t)
            opt.step()


def test_equal_but_different_non_tensor_inputs_are_different_keys() -> None:
    # True == 1 and hash alike: a mask [True, False] and the indices [1, 0] must not share a forward pass
    class Pick(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "idx"], name="q")

        def forward(self, x, idx):  # type: ignore[no-untyped-def]
            return {"loc": x[..., torch.tensor(idx)], "scale": torch.ones(())}

    q, x = Pick(), torch.tensor([[10.0, 20.0]])
    for container in (list, tuple):
        with memoize():
            mask = q.sample_mean({"x": x, "idx": container([True, False])})
            index = q.sample_mean({"x": x, "idx": container([1, 0])})
        assert mask.tolist() == [[10.0]] and index.tolist() == [[20.0, 10.0]], container

    class Signed(Normal):  # 0.0 == -0.0 and hash alike
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "c"], name="p")

        def forward(self, x, c):  # type: ignore[no-untyped-def]
            return {"loc": x * math.copysign(1.0, c), "scale": torch.ones_like(x)}

    p = Signed()
    with memoize():
        plus, minus = p.sample_mean({"x": x, "c": 0.0}), p.sample_mean({"x": x, "c": -0.0})
    assert plus.tolist() == [[10.0, 20.0]] and minus.tolist() == [[-10.0, -20.0]]


def test_a_user_scope_around_a_closure_optimizer_gives_the_values_of_no_scope() -> None:
    # LBFGS evaluates its closure several times within one step (no step hook in between), each with a backward
    # pass that frees the graph: the entries it went through are dropped, so each evaluation is a fresh pass
    def run(scoped: bool) -> list[float]:
        torch.manual_seed(0)
        q, x, z = Encoder(), torch.randn(5, 4), torch.randn(5, 2)
        opt = torch.optim.LBFGS(q.parameters(), lr=0.5, max_iter=4)
        values: list[float] = []

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -q.get_log_prob({"x": x, "z": z}).mean()
            loss.backward()
            values.append(loss.item())
            return loss

        with memoize() if scoped else contextlib.nullcontext():
            for _ in range(2):
                opt.step(closure)
        return values

    plain = run(False)
    assert len(plain) > 2 and run(True) == plain


def test_a_distribution_marked_not_memoizable_runs_every_time() -> None:
    q = Encoder(dropout=0.5)
    x = torch.ones(6, 4)
    with memoize():
        a, b = q.get_params({"x": x})["loc"], q.get_params({"x": x})["loc"]
    assert q.calls == 1 and a is b  # memoizable: one dropout mask shared within the scope
    q.memoizable = False
    q.calls = 0
    torch.manual_seed(0)
    with memoize():
        a, b = q.get_params({"x": x})["loc"], q.get_params({"x": x})["loc"]
    assert q.calls == 2 and not torch.equal(a, b)  # two forward passes, two dropout masks


def test_set_cache_maxsize_acts_at_once_and_bounds_the_scope() -> None:
    q = Encoder()
    xs = [torch.randn(2, 4) for _ in range(3)]
    with memoize():
        set_cache_maxsize(2)
        for x in xs:
            q.get_params({"x": x})
        q.get_params({"x": xs[0]})  # evicted (least recently used): recomputed
        assert q.calls == 4
        q.get_params({"x": xs[2]})  # still cached
        assert q.calls == 4
        set_cache_maxsize(0)  # off at once, inside the open scope
        q.get_params({"x": xs[2]})
        assert q.calls == 5
    with pytest.raises(ValueError, match="maxsize"):
        set_cache_maxsize(-1)


def test_handler_as_decorator_and_under_other_pyro_handlers(vae) -> None:
    q, _, _, x = vae

    @memoize
    def twice():  # type: ignore[no-untyped-def]
        return q.get_params({"x": x}), q.get_params({"x": x})

    twice()
    assert q.calls == 1
    twice()  # a new call, a new scope
    assert q.calls == 2
    with memoize():
        tr = poutine.trace(lambda: (q.sample({"x": x}), q.get_log_prob({"x": x, "z": x[:, :2]}))).get_trace()
    assert q.calls == 3  # through Pyro's handler stack (a trace is active) it still hits
    assert tr.nodes["z"]["type"] == "sample"


@pytest.mark.parametrize("source", ["torch", "python", "python-624", "python-gauss-cached", "python-then-seed",
                                    "numpy", "numpy-pcg64", "numpy-after-624", "numpy-then-seed"])
def test_rng_marks_see_every_global_generator(source: str) -> None:
    # what decides whether a Deterministic's forward may be reused: any draw from a global generator changes the mark
    import random

    import numpy as np

    from pyro_dgm.poutine.memoize_messenger import rng_marks, same_marks

    saved = np.random.mtrand._rand._bit_generator
    try:
        if source == "numpy-pcg64":
            np.random.set_bit_generator(np.random.PCG64(0))
        if source == "numpy-after-624":  # the Mersenne Twister's position wraps around after 624 words
            np.random.rand(600)
        if source == "python-gauss-cached":  # gauss() draws two normals and keeps one for its next call
            random.seed(1)
            random.gauss(0.0, 1.0)
        if source == "python-then-seed":  # every seeding leaves the position and the key's first word alike
            random.seed(7)
        if source == "numpy-then-seed":
            np.random.seed([7])
        before = rng_marks()
        assert same_marks(before, rng_marks())
        {"torch": lambda: torch.rand(1), "python": random.random,
         "python-624": lambda: [random.getrandbits(32) for _ in range(624)],  # back at the same position
         "python-gauss-cached": lambda: random.gauss(0.0, 1.0),  # the kept normal: no word drawn
         "python-then-seed": lambda: (random.random(), random.seed(8)),
         "numpy-then-seed": lambda: (np.random.rand(), np.random.seed([8])),
         "numpy": np.random.rand, "numpy-pcg64": np.random.rand,
         "numpy-after-624": lambda: np.random.rand(312)}[source]()  # 624 words
        assert not same_marks(before, rng_marks())
    finally:
        np.random.set_bit_generator(saved)
