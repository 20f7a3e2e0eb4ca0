"""A ``Deterministic`` runs its ``forward`` at each use by default, as under Pixyz (sharing one pass is opt-in:
``memoizable = True``), and a compiled model whose eager first call ran a ``Deterministic`` without the memoizer's
key (a formula with a user's term, a network with ``memoizable = False``) trains as eagerly and as under Pixyz.

Each program runs under Pixyz and here through the harness (probes p449, and the compiled check of the last
session's opt-in experiment)."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch._dynamo as dynamo
import torch._inductor.config as inductor_config
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm

from pyro_dgm.utils.compat import compiles


def _consumers_program(consumer: str) -> Callable[[], Any]:
    """``E_f[log q1(y|h)] + E_f[log q2(y|h)]`` (+ ``log q3(y|x)``) with ``h = tanh(fc(x))``, where a consumer of the
    first use changes ``h`` behind autograd's back or differentiates through it:

    - ``"t"``, ``"as_strided"``: q1 gives ``h`` other values through ``h.data = h.data.t()`` (or a strided view),
      which leaves its data address as it was (p449: the second use was handed the changed tensor);
    - ``"no_grad"``, ``"data_mul"``: q1 keeps ``h`` as a stop-gradient target and q3, after the second use, scales
      the kept tensor in place (p449: the second use's gradient ran through the first pass's saved output, a crash
      under ``no_grad`` and a wrong gradient through ``.data``);
    - ``"grad_norm"``: the second term is a ``LogProb`` whose ``forward`` the user replaced on the instance with a
      gradient norm taken through ``h`` without ``retain_graph`` (p449: a crash in the backward).

    Returns the loss, the gradient of f's weight, q2's (or None) and how many times f ran."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb

        torch.manual_seed(0)
        calls, kept = [0], []

        class H(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                calls[0] += 1
                return {"h": torch.tanh(self.fc(x))}

        class Q(Normal):
            def __init__(self, name: str, cond: str = "h", role: str = "") -> None:
                super().__init__(var=["y"], cond_var=[cond], name=name)
                self.fc, self.role = nn.Linear(3, 3), role

            def forward(self, **given: torch.Tensor) -> dict:
                (h,) = given.values()
                if self.role == "first" and consumer == "t":
                    h.data = h.data.t()
                elif self.role == "first" and consumer == "as_strided":
                    h.data = h.data.as_strided(h.shape, (0, 1))
                elif self.role == "first" and consumer in ("no_grad", "data_mul"):
                    kept.append(h)
                    return {"loc": h.detach() + self.fc.bias, "scale": torch.ones(3)}
                elif self.role == "last" and consumer == "no_grad":
                    with torch.no_grad():
                        kept[0].mul_(0.5)
                elif self.role == "last":
                    kept[0].data.mul_(0.5)
                return {"loc": self.fc(h), "scale": torch.ones(3)}

        f, q2 = H(), Q("q2")
        second = LogProb(q2)
        if consumer == "grad_norm":
            def grad_norm(x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
                g = torch.autograd.grad(x_dict["h"].pow(2).sum(), f.fc.weight)[0]
                return g.norm().detach(), {}
            second.forward = grad_norm
        loss = Expectation(f, LogProb(Q("q1", role="first"))) + Expectation(f, second)
        if consumer in ("no_grad", "data_mul"):
            loss = loss + LogProb(Q("q3", cond="x", role="last"))
        value = loss.mean().eval({"x": torch.randn(3, 3), "y": torch.randn(3, 3)})
        value.backward()
        return value, f.fc.weight.grad, q2.fc.weight.grad, calls[0]
    return program


@pytest.mark.parametrize("consumer", ["t", "as_strided", "no_grad", "data_mul", "grad_norm"])
def test_a_deterministic_runs_at_each_use_by_default_whatever_its_consumers_do(consumer: str) -> None:
    """(p449) Pixyz's loss, gradients and number of runs (two: one per ``Expectation``), each consumer."""
    ref, ours = run_both(_consumers_program(consumer))
    assert ref[3] == ours[3] == 2
    assert_same(ref, ours)


def _opted_in(consumer: str) -> tuple[Any, Any]:
    """Pixyz's run of :func:`_consumers_program` and ours with every ``Deterministic`` opted in to sharing."""
    from pyro_dgm.distributions import Deterministic

    ref = run_pixyz(_consumers_program(consumer))
    default, Deterministic.memoizable = Deterministic.memoizable, True
    try:
        return ref, run_pyro_dgm(_consumers_program(consumer))
    finally:
        Deterministic.memoizable = default


def test_a_deterministic_that_opts_in_shares_one_pass_with_pixyzs_values() -> None:
    """The opt-in: ``memoizable = True`` runs f once for its two uses, with Pixyz's values and gradients."""
    ref, ours = _opted_in("none")
    assert ref[3] == 2 and ours[3] == 1
    assert_same(ref[:3], ours[:3])


def test_a_terms_forward_replaced_on_the_instance_is_the_users_code_for_an_opted_in_deterministic() -> None:
    """(p449) A ``LogProb`` whose ``forward`` the user replaced on the instance (a gradient norm through ``h``
    without ``retain_graph``) is a user's term: in its formula an opted-in f runs at each use, as under Pixyz (the
    shared pass's graph was freed and the next backward raised)."""
    ref, ours = _opted_in("grad_norm")
    assert ref[3] == ours[3] == 2
    assert_same(ref, ours)


def _critic_steps(compile: bool, user_term: bool, share: bool) -> Callable[[], Any]:
    """Three SGD steps of ``E_f[KL(q||p) + E_f[KL(q||p)] + H(q)]`` (f a ``Deterministic``, q with a batch norm
    and a dropout after it, so each use of f gives q new tensors and q a mask per pass), with a user's term added
    (a zero) or not, f opting in to sharing (``memoizable = True``) or not."""
    def program() -> Any:
        import sympy
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Entropy, Expectation, KullbackLeibler
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class H(Deterministic):
            memoizable = share

            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"h": self.fc(x)}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc, self.drop, self.bn = nn.Linear(3, 2), nn.Dropout(0.4), nn.BatchNorm1d(2)

            def forward(self, h: torch.Tensor) -> dict:
                o = self.drop(self.bn(self.fc(h)))
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        class Zero(Loss):
            def __init__(self) -> None:
                super().__init__(["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("u")

            def forward(self, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
                return x_dict["x"].sum() * 0, {}

        h, q = H(), Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = Expectation(h, KullbackLeibler(q, prior) + Expectation(h, KullbackLeibler(q, prior)) + Entropy(q))
        if user_term:
            loss = loss + Zero()
        kw = {"compile": True} if compile else {}
        model = Model(loss.mean(), distributions=[h, q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      **kw)
        out = [model.train({"x": torch.randn(8, 3)}).detach() for _ in range(3)]
        return out, q.bn.running_mean.clone(), [p.detach().clone() for p in q.parameters()], torch.rand(2)
    return program


@pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")
@pytest.mark.parametrize("user_term, share", [(True, False), (True, True), (False, False)],
                         ids=["users_term", "users_term_opted_in", "default"])
def test_a_compiled_model_whose_first_call_ran_f_without_a_key_trains_as_eagerly(user_term: bool,
                                                                                 share: bool) -> None:
    """The compiled steps took f, run without the memoizer's key in the eager first call, for a network that may
    change its inputs, and dropped q's traced pass at f's second use: q ran a third time (a third dropout mask),
    step-2 loss 5.1560 where eagerly and under Pixyz it is 5.1356. Now the losses, the batch norm's statistics, the
    parameters and the random stream after are Pixyz's eagerly and the eager ones compiled (inductor's eager random
    numbers)."""
    dynamo.reset()
    try:
        ref = run_pixyz(_critic_steps(False, user_term, share))
        eager = run_pyro_dgm(_critic_steps(False, user_term, share))
        with inductor_config.patch(fallback_random=True):
            compiled = run_pyro_dgm(_critic_steps(True, user_term, share))
    finally:
        dynamo.reset()
    assert_same(ref, eager)
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


def _tuple_input_steps(compile: bool, share: bool) -> tuple[list[float], int, Any]:
    """(p451) Four SGD steps of ``-(log p(y|s) + E_f[log q(y|h)] + log p(y|s))`` where ``s = (a, b)`` (an RNN's
    state) and f halves ``a`` in place: the losses, how many times p ran and p's weight."""
    import torch
    from torch import nn

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation, LogProb
    from pyro_dgm.models import Model

    torch.manual_seed(0)
    runs = [0]

    class F(Deterministic):
        memoizable = share

        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["s"], name="f")
            self.fc = nn.Linear(4, 4)

        def forward(self, s: tuple) -> dict:
            s[0].mul_(0.5)
            return {"h": torch.tanh(self.fc(s[0] + s[1]))}

    class P(Normal):
        def __init__(self, name: str, cond: str) -> None:
            super().__init__(var=["y"], cond_var=[cond], name=name)
            self.fc = nn.Linear(4, 4)

        def forward(self, **given: Any) -> dict:
            (v,) = given.values()
            if isinstance(v, tuple):
                runs[0] += 1
                v = v[0] * v[1]
            return {"loc": self.fc(v), "scale": torch.ones(4)}

    f, q, p = F(), P("q", "h"), P("p", "s")
    loss = -(LogProb(p) + Expectation(f, LogProb(q)) + LogProb(p)).mean()
    model = Model(loss, distributions=[f, q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                  compile=compile)
    losses = [float(model.train({"s": (torch.randn(5, 4), torch.randn(5, 4)), "y": torch.randn(5, 4)}))
              for _ in range(4)]
    return losses, runs[0], p.fc.weight.detach().clone()


@pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")
@pytest.mark.parametrize("share", [False, True], ids=["default", "opted_in"])
def test_a_compiled_step_sees_a_tensor_inside_a_tuple_input_changed_in_place(share: bool) -> None:
    """(p451) Compiled, p's pass before f was reused after f halved ``s[0]`` (losses 18.736, 17.506 at steps 2 and
    3 where eagerly they are 18.433, 16.486; p ran 5 times, not 8): the tensors inside a tuple input were not looked
    at. Now compiled steps run p again on the changed input, as eager ones do (porting.md: a network whose input
    another changed in place runs on the changed input)."""
    dynamo.reset()
    try:
        eager = _tuple_input_steps(False, share)
        with inductor_config.patch(fallback_random=True):
            compiled = _tuple_input_steps(True, share)
    finally:
        dynamo.reset()
    assert eager[1] == compiled[1] == 8
    assert_same(list(eager), list(compiled), rtol=1e-4, atol=1e-5)


def _penalty_set_after_the_first_steps(compile: Any) -> Callable[[], Any]:
    """(p457) Four SGD steps of ``-(E_f[log q1(y|h)] + E_f[log q2(y|h)])``; before the third, the second term's
    ``forward`` is replaced on the instance by one that adds a gradient penalty (``create_graph=True``)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb
        from pixyz.models import Model

        class H(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"h": torch.tanh(self.fc(x))}

        class Q(Normal):
            def __init__(self, name: str) -> None:
                super().__init__(var=["y"], cond_var=["h"], name=name)
                self.fc = nn.Linear(3, 3)

            def forward(self, h: torch.Tensor) -> dict:
                return {"loc": self.fc(h), "scale": torch.ones(3)}

        f, q1, q2 = H(), Q("q1"), Q("q2")
        second = LogProb(q2)
        plain = second.forward

        def penalized(x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
            g = torch.autograd.grad(x_dict["h"].pow(2).sum(), f.fc.weight, create_graph=True)[0]
            value, samples = plain(x_dict, **kwargs)
            return value + g.pow(2).sum(), samples

        loss = -(Expectation(f, LogProb(q1)) + Expectation(f, second)).mean()
        kw = {"compile": compile} if compile else {}
        model = Model(loss, distributions=[f, q1, q2], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      **kw)
        out = []
        for step in range(4):
            if step == 2:
                second.forward = penalized
            out.append(model.train({"x": torch.randn(4, 3), "y": torch.randn(4, 3)}).detach())
        return out, [p.detach().clone() for p in f.parameters()], torch.rand(2)
    return program


@pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")
def test_a_gradient_penalty_set_after_the_first_compiled_steps_is_evaluated_eagerly_with_pixyzs_values() -> None:
    """(p457) The compiled step looked for a backward inside the evaluation at its first call only, so a penalty set
    later reached AOT autograd's double backward ("does not currently support double backward"). A change of the
    formula's user's terms makes the next call a watched first call again: a warning, then Pixyz's losses."""
    dynamo.reset()
    try:
        ref = run_pixyz(_penalty_set_after_the_first_steps(False))
        with pytest.warns(RuntimeWarning, match="double backward"):
            ours = run_pyro_dgm(_penalty_set_after_the_first_steps(True))
    finally:
        dynamo.reset()
    assert_same(ref, ours)


def _class_forward_patched_after_compiling(compile: bool) -> Callable[[], Any]:
    """(p459) Five SGD steps of ``-log q(y|x) + R``, a user's term of q's squared weights; before the third, a later
    "cell" patches ``R``'s class ``forward`` (ten times the penalty)."""
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="q")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.fc(x), "scale": torch.ones(3)}

        q = Q()

        class R(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("R")

            def forward(self, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
                return q.fc.weight.pow(2).sum() * torch.ones(x_dict["x"].shape[0]), {}

        def stronger(self: Any, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006
            return 10 * q.fc.weight.pow(2).sum() * torch.ones(x_dict["x"].shape[0]), {}

        kw = {"compile": True} if compile else {}
        model = Model((-LogProb(q) + R()).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.05}, **kw)
        out = []
        for step in range(5):
            if step == 2:
                R.forward = stronger
            out.append(model.train({"x": torch.randn(4, 3), "y": torch.randn(4, 3)}).detach())
        return out, q.fc.weight.detach().clone(), torch.rand(2)
    return program


@pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")
def test_a_terms_class_forward_patched_after_compiling_is_traced_again() -> None:
    """(p459) The compiled step kept running the old ``forward`` (step-3 loss 5.7086 where Pixyz and the eager step
    give 9.7828; no guard sees a class's method): the class ``forward`` of each node is compared at each call now,
    and a change makes the next call a watched first call, then a new trace: Pixyz's losses, weight and stream."""
    dynamo.reset()
    try:
        ref = run_pixyz(_class_forward_patched_after_compiling(False))
        ours = run_pyro_dgm(_class_forward_patched_after_compiling(True))
    finally:
        dynamo.reset()
    assert_same(ref, ours)
