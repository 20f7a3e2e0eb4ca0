"""``lru_cache_for_sample_dict`` memoizes across calls and never returns what recomputing would not.

The reference is the same distribution without the decorator (its twin, with the same weights): after any sequence
of calls, optimizer steps, in-place changes, backward passes, ``no_grad`` blocks and mode switches, the decorated
one gives the twin's values and gradients. Where Pixyz 0.3.3's cache does not (stale values after an optimizer
step, a freed graph on the second backward), the test runs Pixyz too and shows it.
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import pyro_dgm.utils as utils
from pyro_dgm.distributions import Normal


def _encoders(maxsize: int | None = 2) -> tuple[Normal, Normal, list[int]]:
    """A memoized encoder (counting its network's runs), and its undecorated twin with the same weights."""
    old = utils.cache_maxsize()
    utils.set_cache_maxsize(maxsize)
    try:
        runs: list[int] = []

        class Plain(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = torch.nn.Linear(3, 2)
                self.drop = torch.nn.Dropout(0.5)

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                runs.append(1)
                h = self.drop(self.lin(x))
                return {"loc": h, "scale": torch.nn.functional.softplus(h) + 0.1}

        class Memoized(Plain):
            @utils.lru_cache_for_sample_dict()
            def get_params(self, params_dict={}, **kwargs):  # type: ignore[no-untyped-def]  # noqa: B006
                return super().get_params(params_dict, **kwargs)
    finally:
        utils.set_cache_maxsize(old)
    memo = Memoized()
    twin = Plain()
    twin.load_state_dict(memo.state_dict())
    return memo, twin, runs


def test_the_network_runs_once_for_the_same_inputs() -> None:
    memo, _, runs = _encoders()
    x = torch.randn(4, 3)
    z = memo.sample({"x": x})["z"]
    memo.get_log_prob({"z": z, "x": x})
    memo.sample_mean({"x": x})
    assert len(runs) == 1
    memo.sample_mean({"x": x.clone()})  # equal values, another tensor: keyed by identity, as Pixyz's hash is
    assert len(runs) == 2


def test_the_size_is_read_when_decorating() -> None:
    memo, _, runs = _encoders(maxsize=2)
    xs = [torch.randn(2, 3) for _ in range(3)]
    for x in xs:
        memo.sample_mean({"x": x})
    memo.sample_mean({"x": xs[0]})  # evicted (least recently used of 3 > 2)
    memo.sample_mean({"x": xs[2]})  # still there
    assert len(runs) == 4
    off, _, runs_off = _encoders(maxsize=0)
    x = torch.randn(2, 3)
    off.sample_mean({"x": x})
    off.sample_mean({"x": x})
    assert len(runs_off) == 2


def test_a_caller_that_changes_the_returned_dict_leaves_the_cache_be() -> None:
    memo, _, _ = _encoders()
    x = torch.randn(2, 3)
    first = memo.get_params({"x": x})
    loc = first["loc"]
    first["loc"] = torch.zeros(2, 2)
    assert memo.get_params({"x": x})["loc"] is loc


_ACTIONS = st.lists(st.sampled_from(["call_a", "call_b", "call_new", "step", "inplace_weight", "assign_data",
                                     "inplace_input", "backward", "no_grad_call", "eval", "train"]),
                    min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(actions=_ACTIONS)
@example(actions=["call_a", "assign_data", "call_a"])
def test_always_the_values_and_gradients_of_the_undecorated_twin(actions: list[str]) -> None:
    """Any sequence of actions: each call's parameters equal the twin's (dropout off, so that both are
    deterministic; ``train`` and ``eval`` still switch the mode that is part of the key), and each backward gives
    the twin's gradients."""
    memo, twin, _ = _encoders(maxsize=3)
    memo.drop.p = twin.drop.p = 0.0
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (memo, twin)]
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    last: list[tuple[dict, dict]] = []
    for action in actions:
        if action in ("call_a", "call_b", "call_new"):
            x = a if action == "call_a" else b if action == "call_b" else torch.randn(4, 3)
            got, want = memo.get_params({"x": x}), twin.get_params({"x": x})
            for k in want:
                torch.testing.assert_close(got[k], want[k])
                assert got[k].requires_grad == want[k].requires_grad
            last.append((got, want))
        elif action == "no_grad_call":
            with torch.no_grad():
                got, want = memo.get_params({"x": a}), twin.get_params({"x": a})
            torch.testing.assert_close(got["loc"], want["loc"])
        elif action == "step":
            for o in opts:
                o.step()
                o.zero_grad()
        elif action == "inplace_weight":
            with torch.no_grad():
                memo.lin.weight.mul_(0.5)
                twin.lin.weight.mul_(0.5)
        elif action == "assign_data":  # each parameter's .data assigned (no new version), as by checkpoint tools
            for m in (memo, twin):
                vector_to_parameters(parameters_to_vector(m.parameters()).detach() * 0.5, m.parameters())
        elif action == "inplace_input":
            a.add_(1.0)
            last.clear()  # graphs that saved ``a`` cannot run backward any more (in both)
        elif action == "backward" and last:
            got, want = last.pop()
            if got["loc"].requires_grad:
                (got["loc"] ** 2 + got["scale"]).sum().backward()
                (want["loc"] ** 2 + want["scale"]).sum().backward()
                torch.testing.assert_close(memo.lin.weight.grad, twin.lin.weight.grad)
            last.clear()  # their graphs are freed
        elif action in ("eval", "train"):
            getattr(memo, action)()
            getattr(twin, action)()


def test_a_result_whose_graph_a_backward_freed_is_computed_again() -> None:
    """Two backward passes from the same inputs with no step between (gradient accumulation): the second call
    reruns the network, as the first backward freed the cached result's graph."""
    memo, twin, runs = _encoders()
    memo.drop.p = twin.drop.p = 0.0
    x = torch.randn(4, 3)
    for m in (memo, twin):
        for _ in range(2):
            got = m.get_params({"x": x})
            (got["loc"] ** 2 + got["scale"]).sum().backward()
    assert len(runs) == 4
    torch.testing.assert_close(memo.lin.weight.grad, twin.lin.weight.grad)
    with torch.no_grad():  # no graph: nothing to free, the cached values serve every later call
        memo.get_params({"x": x})
        memo.get_params({"x": x})
    assert len(runs) == 5


def test_an_in_place_change_of_a_weight_or_an_input_is_seen() -> None:
    memo, _, runs = _encoders()
    memo.eval()
    x = torch.randn(4, 3)
    with torch.no_grad():
        memo.get_params({"x": x})
        memo.lin.bias.add_(1.0)  # as an optimizer step does, or load_state_dict
        torch.testing.assert_close(memo.get_params({"x": x})["loc"], memo.lin(x))
        x.mul_(2.0)
        torch.testing.assert_close(memo.get_params({"x": x})["loc"], memo.lin(x))
        memo.lin = torch.nn.Linear(3, 2)  # a new submodule
        torch.testing.assert_close(memo.get_params({"x": x})["loc"], memo.lin(x))
        memo.get_params({"x": x})  # cached
        memo.lin.bias.add_(1.0)  # the new submodule's weights are watched too
        torch.testing.assert_close(memo.get_params({"x": x})["loc"], memo.lin(x))
    assert len(runs) == 5


def test_dropout_mode_is_part_of_the_key() -> None:
    memo, _, runs = _encoders()
    x = torch.randn(64, 3)
    memo.train()
    noisy = memo.sample_mean({"x": x})
    memo.eval()
    clean = memo.sample_mean({"x": x})
    assert len(runs) == 2
    torch.testing.assert_close(clean, memo.lin(x))
    assert not torch.equal(noisy, clean)


def test_a_second_backward_after_a_step_works_where_pixyz_raises_or_is_stale() -> None:
    """Train two steps on the same input tensor: ours gives the undecorated twin's losses. Pixyz's cache returns
    the first step's parameters at the second (its graph freed by the first backward): it raises."""
    pixyz_distributions = pytest.importorskip("pixyz.distributions")
    memo, twin, _ = _encoders()
    memo.drop.p = twin.drop.p = 0.0
    x, z = torch.randn(4, 3), torch.randn(4, 2)
    for m in (memo, twin):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        losses = []
        for _ in range(2):
            loss = -m.get_log_prob({"z": z, "x": x}).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        m.losses = losses  # type: ignore[attr-defined]
    assert memo.losses == pytest.approx(twin.losses, rel=1e-6)  # type: ignore[attr-defined]
    assert memo.losses[0] != memo.losses[1]  # type: ignore[attr-defined]

    class PixyzEncoder(pixyz_distributions.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = copy.deepcopy(twin.lin)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.lin(x), "scale": torch.ones(x.shape[0], 2)}

    q = PixyzEncoder()
    stale = q.get_params({"x": x})["loc"]
    with torch.no_grad():
        q.lin.bias.add_(1.0)
    assert torch.equal(q.get_params({"x": x})["loc"], stale)  # Pixyz: stale after an in-place change
    loss = -q.get_log_prob({"z": z, "x": x}).mean()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        (-q.get_log_prob({"z": z, "x": x}).mean()).backward()
