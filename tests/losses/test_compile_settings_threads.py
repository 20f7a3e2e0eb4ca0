"""The settings a compiled call makes in torch's compiler, and Python's recursion limit, when calls overlap in two
threads (probe p480). torch keeps its compiler settings per thread (a user's value is a context variable), so each
thread's calls set and put back their own; the recursion limit is the process's, so the first call in sets it and the
last one out puts it back. Before, both were counted across threads: a second thread's call ran with torch's defaults
(hooks unguarded, numpy's draws from torch's generator, donated buffers on), the first thread kept the call's settings
after it ended, and the recursion limit fell back to 1000 while the second thread's call still compiled."""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import pytest
import torch

from pyro_dgm.losses.compiled import _COMPILE_RECURSION, _deep_recursion, _hook_guards, no_donated_buffers


def _settings() -> tuple[bool, bool, bool]:
    import torch._dynamo.config as dynamo
    import torch._functorch.config as functorch

    return dynamo.skip_nnmodule_hook_guards, dynamo.use_numpy_random_stream, functorch.donated_buffer


_IN_CALL = (False, True, False)


def _overlap(enter: Callable[[], Any], read: Callable[[], Any], setup: Callable[[], Any] = lambda: None
             ) -> dict[str, Any]:
    """Thread A enters a call, thread B enters one while A's is open, A leaves, then B leaves: what ``read`` gives
    in each (deterministic: events order the steps). Each thread runs ``setup`` first (a user's own settings)."""
    a_in, b_in, a_out, b_out = (threading.Event() for _ in range(4))
    seen: dict[str, Any] = {}

    def thread_a() -> None:
        setup()
        seen["A before"] = read()
        with enter():
            seen["A inside"] = read()
            a_in.set()
            assert b_in.wait(30)
        a_out.set()
        assert b_out.wait(30)
        seen["A after"] = read()

    def thread_b() -> None:
        setup()
        seen["B before"] = read()
        assert a_in.wait(30)
        with enter():
            b_in.set()
            assert a_out.wait(30)
            seen["B after A left"] = read()
        b_out.set()
        seen["B after"] = read()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return seen


class _Both:
    def __enter__(self) -> None:
        self._blocks = [no_donated_buffers(), _hook_guards()]
        for b in self._blocks:
            b.__enter__()

    def __exit__(self, *exc: Any) -> None:
        for b in reversed(self._blocks):
            b.__exit__(*exc)


def test_each_thread_s_compiled_call_has_the_call_s_settings_and_gets_its_own_back() -> None:
    seen = _overlap(_Both, _settings)
    defaults = seen["A before"]
    assert defaults == seen["B before"] and defaults != _IN_CALL  # (torch's defaults differ in all three)
    assert seen["A inside"] == _IN_CALL
    assert seen["B after A left"] == _IN_CALL  # (was torch's defaults: only A's thread had them set)
    assert seen["A after"] == defaults  # (was the call's settings, left in A's thread)
    assert seen["B after"] == defaults


def test_a_user_s_own_settings_come_back_in_each_thread() -> None:
    """A user who set the three to other values than torch's defaults, in each thread, gets them back there."""
    import torch._dynamo.config as dynamo
    import torch._functorch.config as functorch

    def set_mine() -> None:
        dynamo.skip_nnmodule_hook_guards, dynamo.use_numpy_random_stream = not _IN_CALL[0], not _IN_CALL[1]
        functorch.donated_buffer = not _IN_CALL[2]

    seen = _overlap(_Both, _settings, set_mine)
    mine = tuple(not v for v in _IN_CALL)
    assert seen["A before"] == seen["B before"] == mine
    assert seen["A inside"] == seen["B after A left"] == _IN_CALL
    assert seen["A after"] == seen["B after"] == mine


def test_the_recursion_limit_holds_while_any_thread_s_call_runs() -> None:
    limit = sys.getrecursionlimit()
    if limit >= _COMPILE_RECURSION:
        pytest.skip("the recursion limit is already at least the compiled call's")
    seen = _overlap(_deep_recursion, sys.getrecursionlimit)
    assert seen["A inside"] == _COMPILE_RECURSION
    assert seen["B after A left"] == _COMPILE_RECURSION  # (was Python's 1000 again: B's compiling could overflow)
    assert seen["A after"] == seen["B after"] == limit


def test_nested_calls_in_one_thread_keep_the_settings_until_the_outer_one_ends() -> None:
    before = _settings()
    with _Both():
        with _Both():
            assert _settings() == _IN_CALL
        assert _settings() == _IN_CALL
    assert _settings() == before


def test_a_compiled_model_trained_in_a_worker_thread_leaves_both_threads_settings_as_they_were() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import ML
    from pyro_dgm.utils.compat import compiles

    if not compiles():
        pytest.skip("torch.compile of pyro_dgm needs torch 2.10 or newer")
    before = _settings()
    torch.manual_seed(0)

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], name="p")
            self.m = torch.nn.Parameter(torch.zeros(2))

        def forward(self) -> dict[str, torch.Tensor]:
            return {"loc": self.m, "scale": torch.ones(2)}

    p = P()
    model = ML(p, optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1}, retain_graph=True,
               compile={"backend": "aot_eager"})
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["before"] = _settings()
        seen["losses"] = [float(model.train({"x": torch.ones(4, 2)})) for _ in range(3)]
        seen["after"] = _settings()

    t = threading.Thread(target=work)
    t.start()
    t.join(300)
    assert seen["after"] == seen["before"]
    assert _settings() == before
    # (the eager twin's losses: the loss of a unit Normal at mean m for x = 1, SGD on m)
    m, expected = torch.zeros(2, requires_grad=True), []
    for _ in range(3):
        loss = -torch.distributions.Normal(m, 1.0).log_prob(torch.ones(4, 2)).sum(-1).mean()
        expected.append(float(loss.detach()))
        loss.backward()
        with torch.no_grad():
            m -= 0.1 * m.grad
            m.grad = None
    assert seen["losses"] == pytest.approx(expected, rel=1e-6)
