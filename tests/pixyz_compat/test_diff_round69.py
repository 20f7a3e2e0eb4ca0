"""A compiled model follows the user's code changed between its steps (a later notebook cell) as Pixyz's eager steps
do: a helper method replaced on the class of a user's loss term, distribution or network, a loss class's ``eval``
patched, and a gradient penalty put on pyro_dgm's own ``LogProb`` class or brought in by swapping a term's
``__class__`` (probe p460: Dynamo guards on none of these, so the compiled code kept running the old code, or traced
the penalty into AOT autograd's missing double backward).

Each program runs under Pixyz and here, compiled with ``backend="aot_eager"`` (the graphs that inductor would
generate code for; the check is whether the new code is traced at all), through the harness."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch._dynamo as dynamo
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm

from pyro_dgm.utils.compat import compiles

pytestmark = pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")

_AOT = {"backend": "aot_eager"}


def _changed_after_compiling(where: str, compile: Any) -> Callable[[], Any]:
    """Five SGD steps of ``(E_q[-log p(y|z)] + R).mean()`` with ``q(z|x)`` a user's ``Normal`` whose ``forward``
    calls a helper ``enc`` and a user's network ``Net`` whose ``forward`` calls a helper ``act``, and ``R`` a user's
    term whose ``forward`` calls a helper ``scale``. Before the third step one of them changes (restored after):

    - ``"term_helper"``, ``"dist_helper"``, ``"net_helper"``, ``"held_helper"``: ``R.scale``, ``Q.enc``,
      ``Net.act`` or ``Helper.shift`` (a plain object's class, which ``Net`` holds as ``self.helper``) replaced on
      the class;
    - ``"swap_then_patch"``: q's network's ``__class__`` swapped to ``Net2``, whose ``act`` is replaced before the
      fourth step;
    - ``"inner_eval"``: ``LogProb.eval`` patched (the ``Expectation`` evaluates its integrand through it);
    - ``"outer_eval"``: the formula's outermost class's ``eval`` patched (what ``Model`` calls);
    - ``"class_data"``: a data attribute of ``Q``'s class set at every step (not code: nothing to trace again).

    Returns the losses, q's and p's weights and the random stream after."""
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import Expectation, LogProb
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class Helper:  # (no module: an object a network holds)
            def shift(self, h: torch.Tensor) -> torch.Tensor:
                return h

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc, self.helper = nn.Linear(3, 2), Helper()

            def act(self, h: torch.Tensor) -> torch.Tensor:
                return torch.tanh(h)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.helper.shift(self.act(self.fc(x)))

        class Net2(Net):  # (for "swap_then_patch")
            def act(self, h: torch.Tensor) -> torch.Tensor:
                return torch.relu(h)

        class Q(Normal):
            epoch = 0

            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = Net()

            def enc(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.enc(x), "scale": torch.ones(2)}

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 3)

            def forward(self, z: torch.Tensor) -> dict:
                return {"loc": self.fc(z), "scale": torch.ones(3)}

        q, p = Q(), P()

        class R(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("R")

            def scale(self) -> float:
                return 0.1

            def forward(self, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
                return self.scale() * p.fc.weight.pow(2).sum() * torch.ones(x_dict["x"].shape[0]), {}

        loss = (-Expectation(q, LogProb(p)) + R()).mean()
        outer = type(loss)
        places = (("act", Net, "act"), ("enc", Q, "enc"), ("scale", R, "scale"), ("eval", LogProb, "eval"),
                  ("outer", outer, "eval"), ("shift", Helper, "shift"))
        saved = {k: v.__dict__.get(n) for k, v, n in places}
        plain_eval = LogProb.eval

        def change() -> None:
            if where == "term_helper":
                R.scale = lambda self: 3.0
            elif where == "dist_helper":
                Q.enc = lambda self, x: self.net(x) + 1.0
            elif where == "net_helper":
                Net.act = lambda self, h: torch.sigmoid(h)
            elif where == "held_helper":
                Helper.shift = lambda self, h: h + 1.0
            elif where == "swap_then_patch":
                q.net.__class__ = Net2
            elif where == "inner_eval":
                LogProb.eval = lambda self, *a, **kw: _doubled(plain_eval(self, *a, **kw))
            elif where == "outer_eval":
                outer_eval = outer.eval
                outer.eval = lambda self, *a, **kw: _doubled(outer_eval(self, *a, **kw))

        kw = {"compile": compile} if compile else {}
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05}, **kw)
        out = []
        try:
            for step in range(5):
                Q.epoch = step  # (data: compared by no one)
                if step == 2:
                    change()
                if step == 3 and where == "swap_then_patch":
                    Net2.act = lambda self, h: torch.sigmoid(h) + 1.0
                out.append(model.train({"x": torch.randn(4, 3), "y": torch.randn(4, 3)}).detach())
        finally:
            for key, cls, name in places:
                if saved[key] is None:
                    if name in cls.__dict__:
                        delattr(cls, name)
                else:
                    setattr(cls, name, saved[key])
        return out, [t.detach().clone() for t in (*q.parameters(), *p.parameters())], torch.rand(2)
    return program


def _doubled(out: Any) -> Any:
    """A loss ``eval``'s result with its value doubled (a tensor, or the first item of a tuple)."""
    if isinstance(out, tuple):
        return (2 * out[0], *out[1:])
    return 2 * out


@pytest.mark.parametrize("where", ["term_helper", "dist_helper", "net_helper", "held_helper", "swap_then_patch",
                                   "inner_eval", "outer_eval"])
def test_code_of_the_users_classes_changed_after_compiling_is_traced_again(where: str) -> None:
    """(p460, p462) A helper method replaced on a user's loss term, distribution or network class (or on the class
    of a plain object a network holds), or a loss class's ``eval`` patched, kept running the old code in the
    compiled steps (step-3 loss 2.794 where Pixyz and the eager
    step give 6.985 for a term's helper; 1.474 against 7.761 for a distribution's), as did a method patched on the
    new class of a network whose ``__class__`` was swapped: the code in the dicts of the user's classes the loss
    reaches, the classes of its modules, and each node's class ``eval`` and ``__call__``, are compared at each call
    now; a change makes the next call a watched first call, then a new trace: Pixyz's losses, weights and stream."""
    dynamo.reset()
    try:
        ref = run_pixyz(_changed_after_compiling(where, False))
        ours = run_pyro_dgm(_changed_after_compiling(where, _AOT))
        eager = run_pyro_dgm(_changed_after_compiling(where, False))
    finally:
        dynamo.reset()
    assert_same(ref, ours)
    assert_same(eager, ours)
    assert float(ref[0][3]) != pytest.approx(float(run_pixyz(_changed_after_compiling("none", False))[0][3]))


def test_a_class_attribute_that_is_data_does_not_make_the_compiled_step_trace_again() -> None:
    """A class's data attribute set at every step (``Q.epoch = step``) is not code: the compiled step keeps its
    graph (one trace for the five steps, counted by Dynamo) and gives Pixyz's values."""
    dynamo.reset()
    try:
        ref = run_pixyz(_changed_after_compiling("class_data", False))
        before = dict(dynamo.utils.counters["stats"])
        ours = run_pyro_dgm(_changed_after_compiling("class_data", _AOT))
        traced = dynamo.utils.counters["stats"]["unique_graphs"] - before.get("unique_graphs", 0)
    finally:
        dynamo.reset()
    assert_same(ref, ours)
    assert traced == 1


def _penalty_brought_in_after_compiling(how: str, compile: Any) -> Callable[[], Any]:
    """Five SGD steps of Pixyz's docstring VAE, ``(KL(q||prior) - E_q[log p(x|z)]).mean()``; before the third, a
    gradient penalty (``create_graph=True``) comes into the ``LogProb`` term: ``"class"`` patches pyro_dgm's
    ``LogProb.forward`` (restored after), ``"swap"`` sets the term's ``__class__`` to a user's subclass with it."""
    def program() -> Any:
        import torch
        from pixyz_harness import docstring_vae

        from pixyz.losses import Expectation, KullbackLeibler, LogProb
        from pixyz.models import Model

        q, p, prior, x = docstring_vae()
        term = LogProb(p)
        loss = (KullbackLeibler(q, prior) - Expectation(q, term)).mean()
        plain = LogProb.forward

        def penalized(self: Any, *args: Any, **kwargs: Any) -> tuple:
            value, samples = plain(self, *args, **kwargs)
            g = torch.autograd.grad(value.sum(), list(self.p.parameters()), create_graph=True)
            return value - 0.01 * sum(gi.pow(2).sum() for gi in g), samples

        class Penalized(LogProb):
            forward = penalized

        kw = {"compile": compile} if compile else {}
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1}, **kw)
        out = []
        try:
            for step in range(5):
                if step == 2:
                    if how == "class":
                        LogProb.forward = penalized
                    else:
                        term.__class__ = Penalized
                out.append(model.train({"x": x.clone()}).detach())
        finally:
            LogProb.forward = plain
        return out, [t.detach().clone() for t in p.parameters()], torch.rand(2)
    return program


@pytest.mark.parametrize("how", ["class", "swap"])
def test_a_gradient_penalty_brought_in_through_a_class_after_compiling_is_evaluated_eagerly(how: str) -> None:
    """(p460) The change was seen, but the next call was watched for a backward inside the loss only if the formula
    had a user's term: a penalty patched onto pyro_dgm's class, or brought in by a ``__class__`` swap (which did not
    mark the formula changed), was traced and raised "does not currently support double backward". Every call after
    a change is watched now, and a swapped class marks the formula changed: a warning, then Pixyz's values."""
    dynamo.reset()
    try:
        ref = run_pixyz(_penalty_brought_in_after_compiling(how, False))
        with pytest.warns(RuntimeWarning, match="double backward"):
            ours = run_pyro_dgm(_penalty_brought_in_after_compiling(how, _AOT))
    finally:
        dynamo.reset()
    assert_same(ref, ours)


def _swapped_after_the_first_evaluation() -> Any:
    """``E_f[log q1(y|h)] + E_f[log q2(y|h)]`` with ``h = tanh(fc(x))``, evaluated once; then the second term's
    ``__class__`` is swapped to a user's ``LogProb`` subclass whose ``forward`` differentiates through ``h`` without
    ``retain_graph`` (a gradient-norm metric), and the loss is evaluated and differentiated again. Returns both values,
    f's gradient and how many times f ran."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import Expectation, LogProb

    calls = [0]

    class H(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> dict:
            calls[0] += 1
            return {"h": torch.tanh(self.fc(x))}

    class Q(Normal):
        def __init__(self, name: str) -> None:
            super().__init__(var=["y"], cond_var=["h"], name=name)
            self.fc = nn.Linear(3, 3)

        def forward(self, h: torch.Tensor) -> dict:
            return {"loc": self.fc(h), "scale": torch.ones(3)}

    f = H()

    class GradNorm(LogProb):
        def forward(self, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
            g = torch.autograd.grad(x_dict["h"].pow(2).sum(), f.fc.weight)[0]
            return g.norm().detach(), {}

    second = LogProb(Q("q2"))
    loss = (Expectation(f, LogProb(Q("q1"))) + Expectation(f, second)).mean()
    data = {"x": torch.randn(3, 3), "y": torch.randn(3, 3)}
    first = loss.eval(data).detach()
    second.__class__ = GradNorm
    value = loss.eval(data)
    value.backward()
    return first, value, f.fc.weight.grad, calls[0]


def test_a_terms_class_swapped_to_the_users_is_the_users_code_for_an_opted_in_deterministic() -> None:
    """(p460) Swapping a term's ``__class__`` did not mark the formula changed, so its cached user's terms stayed
    empty: an opted-in f shared one pass with a user's term that differentiates through it, and the backward would
    raise. The swap marks the formula changed now: f runs at each use in the second evaluation, as under Pixyz."""
    from pyro_dgm.distributions import Deterministic

    ref = run_pixyz(_swapped_after_the_first_evaluation)
    default, Deterministic.memoizable = Deterministic.memoizable, True
    try:
        ours = run_pyro_dgm(_swapped_after_the_first_evaluation)
    finally:
        Deterministic.memoizable = default
    assert ref[3] == 4 and ours[3] == 3  # (shared in the first evaluation, at each use in the second)
    assert_same(ref[:3], ours[:3])


def _new_function_at_each_step(compile: Any) -> Callable[[], Any]:
    """Twelve SGD steps of ``-log q(y|x)``, where ``q``'s class gets a new (equal) helper function before each step
    (a caching decorator's pattern)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="q")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.enc(x), "scale": torch.ones(3)}

        q = Q()
        kw = {"compile": compile} if compile else {}
        model = Model((-LogProb(q)).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.05}, **kw)
        out = []
        for _ in range(12):
            Q.enc = lambda self, x: torch.tanh(self.fc(x))
            out.append(model.train({"x": torch.randn(4, 3), "y": torch.randn(4, 3)}).detach())
        return out, q.fc.weight.detach().clone(), torch.rand(2)
    return program


def test_code_that_changes_at_every_step_is_evaluated_eagerly_after_eight_changes_with_a_warning() -> None:
    """(p462) A class attribute set to a new function before each step made every call a watched eager first call
    (the model never ran compiled; with the change inside the network, a new trace every other step, 0.9 MB more
    each time), without a word: after 8 changes the loss is evaluated eagerly, with a ``RuntimeWarning``, and
    Pixyz's values."""
    dynamo.reset()
    try:
        ref = run_pixyz(_new_function_at_each_step(False))
        with pytest.warns(RuntimeWarning, match="evaluated eagerly from now on"):
            ours = run_pyro_dgm(_new_function_at_each_step(_AOT))
    finally:
        dynamo.reset()
    assert_same(ref, ours)


def _renamed_with_the_users_dist() -> Any:
    """A renamed ``q(z|x)`` (``replace_var(z="w")``) whose class overrides ``set_dist`` to keep a plain torch object
    (its loc doubled) and, in a second class, has a ``dist`` property of its own (its loc plus 1): two analytic
    KLs against ``p(w)`` each, and the renamed distributions' ``dist`` after."""
    import torch
    from torch import nn

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    class Doubled(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[..., :2], "scale": torch.nn.functional.softplus(h[..., 2:]) + 0.1}

        def set_dist(self, x_dict: dict = {}, batch_n: Any = None, **kwargs: Any) -> None:  # noqa: B006
            super().set_dist(x_dict, batch_n, **kwargs)
            self._dist = torch.distributions.Normal(self._dist.loc * 2, self._dist.scale)

    class Shifted(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.fc(x), "scale": torch.ones(2)}

        @property
        def dist(self) -> Any:
            return torch.distributions.Normal(self._dist.loc + 1.0, self._dist.scale)

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["w"], name="p")
    x = torch.randn(5, 3)
    out = []
    for q in (Doubled(), Shifted()):
        renamed = q.replace_var(z="w")
        out += [KullbackLeibler(renamed, p).eval({"x": x}) for _ in range(2)]
        out += [renamed.dist.loc, renamed.dist.scale]
    return out


def test_a_renamed_distribution_uses_the_users_set_dist_and_dist_as_under_pixyz() -> None:
    """(p462) The second KL of a renamed distribution whose ``set_dist`` keeps a plain torch object raised "'Normal'
    object is not callable" (its ``dist`` was called as the builder), and a renamed distribution's ``dist`` ignored
    the user's ``dist`` property (loc 1 away from Pixyz's): Pixyz's KLs and objects."""
    assert_same(*run_both(_renamed_with_the_users_dist))


def _renamed_set_dist_draws() -> Any:
    """``KL(q(w) || p(w))`` of a renamed ``q(z)`` whose ``set_dist`` adds a standard-normal draw to the loc (one KL
    value: a distribution without inputs), then a KL of ``q`` itself: the values, how many times ``set_dist`` ran in
    each, and the random stream after."""
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    calls = []

    class Q(Normal):
        def set_dist(self, x_dict: dict = {}, batch_n: Any = None, **kwargs: Any) -> None:  # noqa: B006
            calls.append(batch_n)
            super().set_dist(x_dict, batch_n, **kwargs)
            self._dist = torch.distributions.Normal(self._dist.loc + torch.randn_like(self._dist.loc),
                                                    self._dist.scale)

    q = Q(loc=torch.ones(1, 2), scale=torch.ones(1, 2), var=["z"], name="q")
    p = Normal(loc=torch.zeros(1, 2), scale=torch.ones(1, 2), var=["w"], name="p")
    renamed = KullbackLeibler(q.replace_var(z="w"), p).eval()
    first = len(calls)
    plain = KullbackLeibler(q, p.replace_var(w="z")).eval()
    return renamed, first, plain, len(calls) - first, torch.rand(2)


def test_a_renamed_distributions_kl_runs_the_users_set_dist_once_as_under_pixyz() -> None:
    """(p463) The KL of one value read the renamed distribution's batch shape by building it again, which ran the
    user's ``set_dist`` a second time (its draw moved the random stream: the next KL 0.0830 where Pixyz gives
    1.9248): once, as for a distribution that is not renamed."""
    ref, ours = run_both(_renamed_set_dist_draws)
    assert ref[1] == ref[3] == 1
    assert_same(ref, ours)


def _holding_weak_proxies(compile: Any) -> Callable[[], Any]:
    """Three SGD steps of ``-E_q[log p(y|z)]`` where q's network holds a ``weakref.proxy`` of a class and one of an
    object that is gone."""
    def program() -> Any:
        import weakref

        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import Expectation, LogProb
        from pixyz.models import Model

        class Kind:
            pass

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc, self.kind = nn.Linear(3, 2), weakref.proxy(Kind)
                gone = Kind()
                self.owner = weakref.proxy(gone)
                del gone

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fc(x)

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = Net()

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.net(x), "scale": torch.ones(2)}

        q = Q()
        p = Normal(loc="z", scale=torch.ones(2), var=["y"], cond_var=["z"], name="p")
        kw = {"compile": compile} if compile else {}
        model = Model(-Expectation(q, LogProb(p)).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.05}, **kw)
        return [model.train({"x": torch.randn(4, 3), "y": torch.randn(4, 2)}).detach() for _ in range(3)]
    return program


def test_a_network_holding_weak_proxies_trains_compiled_as_under_pixyz() -> None:
    """(p463) The scan of the objects a network holds asked a ``weakref.proxy`` whether it is a class (it answers
    for its object: an unhashable proxy of a class, or a ``ReferenceError`` once its object is gone): the first
    compiled step raised. Now Pixyz's losses."""
    dynamo.reset()
    try:
        ref = run_pixyz(_holding_weak_proxies(False))
        ours = run_pyro_dgm(_holding_weak_proxies(_AOT))
    finally:
        dynamo.reset()
    assert_same(ref, ours)
