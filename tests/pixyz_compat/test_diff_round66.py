"""Sixty-sixth round (probe p433, higher-order gradients through distributions and losses), under Pixyz and here
(:mod:`pixyz_harness`):

* within one loss evaluation, a network's pass whose graph ``torch.autograd.grad`` (without ``retain_graph``) had
  freed was reused at the same input, and the next gradient raised "Trying to backward through the graph a second
  time"; Pixyz runs the network at each use (a gradient norm logged before a gradient penalty, a first-order inner
  step on the weights);
* ``Model(compile=True)`` of a loss that differentiates inside its evaluation (a WGAN-GP penalty written as a
  ``Loss``) failed at its first compiled step (torch.compile's AOT autograd has no double backward): it is
  evaluated eagerly now, with a warning, and trains as the eager model and Pixyz do.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm


def _reuse_program(scenario: str) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss

        torch.manual_seed(1)

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))

            def forward(self, x: Any) -> dict:
                return {"t": self.net(x)}

        d = D()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                if scenario == "input":  # a logged gradient norm, then the gradient penalty at the same input
                    xh = x.clone().requires_grad_()
                    g1, = torch.autograd.grad(d.sample({"x": xh})["t"].sum(), xh)
                    g2, = torch.autograd.grad(d.sample({"x": xh})["t"].sum(), xh, create_graph=True)
                    return (g2.norm(dim=1) - 1).pow(2).mean() + 0 * g1.sum(), {}
                gw = torch.autograd.grad(d.sample({"x": x})["t"].mean(), list(d.parameters()))  # an inner step's
                return d.sample({"x": x})["t"].mean() + sum((q ** 2).sum() for q in gw), {}

        x = torch.randn(4, 3)
        value = L().eval({"x": x})
        value.backward()
        return value.detach(), d.net[0].weight.grad

    return program


@pytest.mark.parametrize("scenario", ["input", "weights"])
def test_a_pass_whose_graph_a_gradient_freed_runs_again(scenario: str) -> None:
    ref, ours = run_both(_reuse_program(scenario))
    assert_same(ref, ours)


def test_a_deterministic_runs_at_each_use_where_a_users_term_runs() -> None:
    """Within an evaluation where a user's term runs, a ``Deterministic`` runs at each use, as under Pixyz, with
    ``retain_graph=True`` or not (p441: a pass shared with a use before a freeing backward failed); in one of
    pyro_dgm's terms only, once for its two uses."""
    import sympy
    from torch import nn

    from pyro_dgm.distributions import Deterministic
    from pyro_dgm.losses.losses import Loss

    calls = []

    class D(Deterministic):
        memoizable = True  # opts in to sharing one pass between uses (what this test is about)

        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            calls.append(1)
            return {"t": self.net(x)}

    d = D()

    class L(Loss):
        def __init__(self, retain: bool) -> None:
            super().__init__(input_var=["x"])
            self.retain = retain

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("L")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            x = x_dict["x"]
            g, = torch.autograd.grad(d.sample({"x": x})["t"].sum(), x, retain_graph=self.retain)
            return d.sample({"x": x})["t"].sum() + g.sum(), {}

    for retain in (True, False):
        calls.clear()
        L(retain).eval({"x": torch.randn(4, 3, requires_grad=True)}).backward()
        assert len(calls) == 2
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Expectation, LogProb

    p = Normal(loc="t", scale=torch.tensor(1.0), var=["y"], cond_var=["t"], name="p")
    calls.clear()
    (Expectation(d, LogProb(p)) + Expectation(d, LogProb(p)) * 2).eval({"x": torch.randn(4, 3), "y": torch.randn(4, 1)})
    assert len(calls) == 1


def _gp_program(compile: bool | None) -> Any:
    """A WGAN-GP critic written as a ``Loss``, trained 3 SGD steps (``compile=`` given unless ``None``, Pixyz's)."""
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

            def forward(self, x: Any) -> dict:
                return {"t": self.net(x)}

        class GP(Loss):
            def __init__(self, d: Any) -> None:
                super().__init__(input_var=["x", "y", "eps"])
                self.d = d

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("GP")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x, y, eps = x_dict["x"], x_dict["y"], x_dict["eps"]
                xh = (eps * x + (1 - eps) * y).requires_grad_(True)
                g, = torch.autograd.grad(self.d.sample({"x": xh})["t"].sum(), xh, create_graph=True)
                critic = self.d.sample({"x": y})["t"].mean() - self.d.sample({"x": x})["t"].mean()
                return critic + 10 * ((g.norm(dim=1) - 1) ** 2).mean(), x_dict

        torch.manual_seed(3)
        d = D()
        options = {} if compile is None else {"compile": compile}
        model = Model(GP(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      **options)
        torch.manual_seed(4)
        losses = [model.train({"x": torch.randn(4, 3) + 1, "y": torch.randn(4, 3), "eps": torch.rand(4, 1)})
                  for _ in range(3)]
        return losses, d.net[0].weight

    return program


def test_a_compiled_model_whose_loss_differentiates_runs_it_eagerly_with_a_warning() -> None:
    eager = run_pyro_dgm(_gp_program(False))
    with pytest.warns(RuntimeWarning, match="ran a backward pass inside .* this loss is evaluated eagerly"):
        compiled = run_pyro_dgm(_gp_program(True))
    assert_same(eager, compiled)


def test_a_gradient_penalty_in_a_loss_trains_as_under_pixyz() -> None:
    """The eager model above, against Pixyz's (3 SGD steps)."""
    ref, ours = run_both(_gp_program(None))
    assert_same(ref, ours)


def _critic() -> Any:
    """A small critic network ``d(t|x)`` (3 -> 8 -> 1), as the pyro_dgm-only penalty tests below use it."""
    from torch import nn

    from pyro_dgm.distributions import Deterministic

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    return D()


# ---- probe p434, an attack round on the above and on the hooks of test_diff_round65.py


def _residual_program(kind: str) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss

        torch.manual_seed(2)

        class STE(torch.autograd.Function):  # a straight-through estimator (a custom Function's node)
            @staticmethod
            def forward(ctx: Any, x: Any) -> Any:
                return x.round()

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                return g

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
                self.register_buffer("b", torch.full((3,), 2.0))

            def forward(self, x: Any) -> dict:
                h = self.net(x)
                out = {"residual": x + h, "buffer": self.b * h, "cat": torch.cat([x, h], -1),
                       "ste": x + STE.apply(h * 4) / 4}[kind]
                return {"t": out}

        d = D()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                gw = torch.autograd.grad(d.sample({"x": x})["t"].mean(), list(d.net.parameters()))
                return d.sample({"x": x})["t"].mean() + sum((q ** 2).sum() for q in gw), {}

        value = L().eval({"x": torch.randn(4, 3)})
        value.backward()
        return value.detach(), d.net[0].weight.grad

    return program


@pytest.mark.parametrize("kind", ["residual", "buffer", "cat", "ste"])
def test_a_freed_graph_is_found_beyond_the_outputs_first_node(kind: str) -> None:
    """The output's first node may save nothing or sit off the freed path (a residual ``x + h``, ``b * h``,
    ``torch.cat``), or be a custom ``autograd.Function``'s: the graph is searched breadth first."""
    ref, ours = run_both(_residual_program(kind))
    assert_same(ref, ours)


def test_a_penalty_in_a_helper_function_is_seen_when_the_first_evaluation_runs_it() -> None:
    """A gradient penalty computed by a module-level helper (no name in the loss's code): the first, eager,
    evaluation saw a backward pass inside, so the compiled model evaluates eagerly."""
    import sympy

    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    def penalty(d: Any, xh: torch.Tensor) -> torch.Tensor:
        from torch.autograd import grad as differentiate
        g, = differentiate(d.sample({"x": xh})["t"].sum(), xh, None, True, True)
        return ((g.norm(dim=1) - 1) ** 2).mean()

    class GP(Loss):
        def __init__(self, d: Any) -> None:
            super().__init__(input_var=["x"])
            self.d = d

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("GP")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            x = x_dict["x"]
            return self.d.sample({"x": x})["t"].mean() + penalty(self.d, x.clone().requires_grad_(True)), x_dict

    results = []
    for compile in (False, True):
        torch.manual_seed(3)
        d = _critic()
        model = Model(GP(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      compile=compile)
        torch.manual_seed(4)
        with pytest.warns(RuntimeWarning, match="ran a backward pass inside") if compile else _no_warning():
            results.append([float(model.train({"x": torch.randn(4, 3)})) for _ in range(3)])
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def _no_warning() -> Any:
    import contextlib
    return contextlib.nullcontext()


def test_pixyzs_hooks_set_on_an_instance() -> None:
    """``poe._compute_expert_params = ...`` on the product is called, as Pixyz calls ``self``'s (an ``ActNorm2d``'s:
    ``test_diff_round67.py``)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ProductOfNormal

        e1 = Normal(loc="a", scale="sa", var=["z"], cond_var=["a", "sa"], name="e1")
        poe = ProductOfNormal([e1])
        poe._compute_expert_params = lambda loc, scale, weight: (loc.mean(0), scale[0] * 1.5)
        d = {"a": torch.tensor([[0.5, -1.0]]), "sa": torch.ones(1, 2)}
        params = poe.get_params(d)
        return params["loc"], params["scale"]

    ref, ours = run_both(program)
    assert_same(ref, ours)


# ---- probe p436, an attack round on the above


def _vae_with_user_term(first: bool, compile: bool) -> Any:
    import sympy
    from torch import nn

    from pyro_dgm.distributions import Bernoulli, Normal
    from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin, self.sc = nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": nn.functional.softplus(self.sc(x)) + 0.1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.lin = nn.Linear(4, 8)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.lin(z))}

    class Penalty(Loss):
        def __init__(self, q: Any) -> None:
            super().__init__(input_var=["x"])
            self.q = q

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("R")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            return 1e-3 * (self.q.lin.weight ** 2).sum(), {}

    torch.manual_seed(0)
    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="prior")
    elbo = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    loss = Penalty(q) + elbo if first else elbo + Penalty(q)
    return Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.01},
                 compile=compile), q


def test_a_users_term_that_does_not_differentiate_is_compiled() -> None:
    """The memoizer's freed-graph check reads saved tensors too: not taken for a backward pass (p436: the loss ran
    eagerly, with a false warning, when the user's term came first)."""
    import warnings

    losses = []
    for compile in (False, True):
        model, _ = _vae_with_user_term(True, compile)
        torch.manual_seed(1)
        x = torch.bernoulli(torch.rand(16, 8))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            losses.append([float(model.train({"x": x})) for _ in range(3)])
        if compile:
            assert model._dgm_compiled and not _went_eager(model)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def _went_eager(model: Any) -> bool:
    from pyro_dgm.losses import compiled

    return any(f._dgm_fn is compiled._EAGER_ONLY or f._dgm_fn is None for f in model._dgm_compiled.values())


def test_the_users_saved_tensor_hooks_still_pack_in_the_first_compiled_step() -> None:
    """(p436) The watch of the first evaluation calls the user's own saved-tensor hooks (a compression, CPU
    offloading) instead of hiding them: the first step's weights are the eager step's."""
    weights, packed = [], []
    for compile in (False, True):
        model, q = _vae_with_user_term(True, compile)
        count = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            count[0] += 1
            return t.to(torch.bfloat16) if t.is_floating_point() else t

        def unpack(t: torch.Tensor) -> torch.Tensor:
            return t.float() if t.dtype == torch.bfloat16 else t

        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            model.train({"x": torch.bernoulli(torch.rand(16, 8))})
        weights.append(q.lin.weight.detach().clone())
        packed.append(count[0])
    assert packed[0] > 0 and packed[1] == packed[0]
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=0)


def test_a_penalty_is_watched_at_the_first_evaluation_with_gradients() -> None:
    """A ``test()`` (under ``no_grad``) first is not the watched evaluation: the first ``train()`` is (p436: the
    penalty went unseen and the compiled step failed)."""
    import sympy

    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    class GP(Loss):
        def __init__(self, d: Any) -> None:
            super().__init__(input_var=["x"])
            self.d = d

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("GP")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            with torch.enable_grad():
                xh = x_dict["x"].clone().requires_grad_(True)
                g, = torch.autograd.grad(self.d.sample({"x": xh})["t"].sum(), xh, create_graph=True)
            return self.d.sample({"x": x_dict["x"]})["t"].mean() + ((g.norm(dim=1) - 1) ** 2).mean(), x_dict

    runs = []
    for compile in (False, True):
        torch.manual_seed(3)
        d = _critic()
        model = Model(GP(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      compile=compile)
        torch.manual_seed(4)
        x = torch.randn(4, 3)
        with pytest.warns(RuntimeWarning, match="ran a backward pass inside") if compile else _no_warning():
            runs.append([float(model.test({"x": x}))] + [float(model.train({"x": x})) for _ in range(3)])
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)


def _deep_program(layers: int) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss

        torch.manual_seed(5)

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.lin = nn.Linear(3, 3)
                self.shifts = nn.ParameterList([nn.Parameter(torch.full((3,), 0.01)) for _ in range(layers)])

            def forward(self, x: Any) -> dict:
                h = torch.tanh(self.lin(x))
                for b in self.shifts:  # (nodes that save nothing)
                    h = h + b
                return {"t": h}

        d = D()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                g = torch.autograd.grad(d.sample({"x": x})["t"].mean(), [d.lin.weight])
                return d.sample({"x": x})["t"].mean() + (g[0] ** 2).sum(), {}

        value = L().eval({"x": torch.randn(4, 3)})
        value.backward()
        return value.detach(), d.lin.weight.grad

    return program


def test_a_freed_graph_behind_forty_nodes_that_save_nothing() -> None:
    ref, ours = run_both(_deep_program(40))
    assert_same(ref, ours)


# ---- probe p438, an attack round on the above: the watch is now of torch's backward entry, not saved tensors


def _users_hooks_program() -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        store: dict = {}

        def pack(t: Any) -> Any:  # (an offloading pair that hands each tensor back once)
            key = object()
            store[key] = t
            return key

        def unpack(key: Any) -> Any:
            return store.pop(key)

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

            def forward(self, x: Any) -> dict:
                return {"t": self.net(x)}

        class L(Loss):
            def __init__(self, d: Any) -> None:
                super().__init__(input_var=["x"])
                self.d = d

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                return self.d.sample({"x": x})["t"].mean() + (self.d.sample({"x": x})["t"] ** 2).mean(), {}

        torch.manual_seed(3)
        d = D()
        model = Model(L(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05})
        torch.manual_seed(4)
        losses = []
        for _ in range(3):
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                losses.append(model.train({"x": torch.randn(4, 3)}))
        return losses, d.net[0].weight

    return program


def test_the_users_saved_tensor_hooks_are_not_run_by_the_library() -> None:
    """(p438) Hooks that hand each saved tensor back once: the library reads no saved tensor of a reused pass
    where no backward ran inside the evaluation (a ``KeyError`` in ``backward`` before)."""
    ref, ours = run_both(_users_hooks_program())
    assert_same(ref, ours)


def test_torch_func_inside_a_users_term_trains_compiled_as_eagerly() -> None:
    """(p438) ``torch.func.grad`` inside a user's term refused the watch's saved-tensor hooks; the term is seen to
    differentiate now and the compiled model evaluates it eagerly, with the eager numbers."""
    import warnings

    import sympy
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["c"], name="p")
            self.lin = nn.Linear(2, 4)

        def forward(self, c: torch.Tensor) -> dict:
            h = self.lin(c)
            return {"loc": h[..., :2], "scale": nn.functional.softplus(h[..., 2:]) + 0.1}

    class Score(Loss):
        def __init__(self, p: Any) -> None:
            super().__init__(input_var=["x", "c"])
            self.p = p

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("S")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            x, c = x_dict["x"], x_dict["c"]

            def logp(xi: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
                return self.p.get_log_prob({"x": xi[None], "c": ci[None]}).sum()

            g = torch.func.vmap(torch.func.grad(logp))(x, c)
            return 0.5 * (g ** 2).sum(1).mean(), x_dict

    runs = []
    for compile in (False, True):
        torch.manual_seed(1)
        p = P()
        model = Model(Score(p), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.01},
                      compile=compile)
        torch.manual_seed(2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            runs.append([float(model.train({"x": torch.randn(6, 2), "c": torch.randn(6, 2)})) for _ in range(3)])
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)


def _wide_program() -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss

        torch.manual_seed(7)

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.w = nn.ParameterList([nn.Parameter(torch.randn(3) * 0.3) for _ in range(100)])

            def forward(self, x: Any) -> dict:
                return {"t": torch.cat([(torch.tanh(x @ w) + 1).view(-1, 1) for w in self.w], dim=1)}

        d = D()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                g, = torch.autograd.grad(d.sample({"x": x})["t"][:, 99].sum(), [d.w[99]])
                return d.sample({"x": x})["t"].sum() + (g ** 2).sum(), {}

        value = L().eval({"x": torch.randn(4, 3)})
        value.backward()
        return value.detach(), d.w[0].grad

    return program


def test_a_freed_branch_of_a_wide_graph_is_found() -> None:
    """(p438) ``torch.cat`` of 100 branches, the last one's graph freed: found behind the 256 nodes the search
    stopped at."""
    ref, ours = run_both(_wide_program())
    assert_same(ref, ours)


# ---- probe p439, an attack round on the watch of torch's backward entry


def _dropout_program() -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses.losses import Loss

        torch.manual_seed(11)

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(3, 2)
                self.drop = nn.Dropout(0.5)

            def forward(self, x: Any) -> dict:
                return {"loc": self.drop(self.lin(x)), "scale": torch.ones(x.shape[0], 2)}

        q = Q()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x", "z"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                lp = q.get_log_prob({"x": x_dict["x"], "z": x_dict["z"]}).sum()
                norm = torch.autograd.grad(lp, q.lin.weight)[0].norm()  # (a logged gradient norm: frees the graph)
                return q.sample_mean({"x": x_dict["x"]}).detach().sum() + 0 * norm, {}

        value = L().eval({"x": torch.randn(4, 3), "z": torch.randn(4, 2)})
        return value, torch.rand(1)

    return program


def test_a_familys_pass_is_reused_after_a_backward_as_pixyzs_cache_reuses_it() -> None:
    """(p439) Only a ``Deterministic``'s freed pass runs again (Pixyz runs those at each use); a ``Normal`` with
    dropout is answered from the pass Pixyz's ``get_params`` cache reuses too: the same mask, the same stream."""
    ref, ours = run_both(_dropout_program())
    assert_same(ref, ours)


def test_a_users_wrapper_of_the_backward_entry_installed_during_a_watch() -> None:
    """(p439) A profiler-style wrapper of ``torch.autograd._engine_run_backward`` installed inside a user's term
    (so it wraps the library's watch) and kept: no infinite recursion at the next step; torch's own is put back
    under it."""
    import sympy
    import torch.autograd as autograd

    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    calls = [0]
    before = autograd._engine_run_backward

    class Profiled(Loss):
        def __init__(self, d: Any) -> None:
            super().__init__(input_var=["x"])
            self.d = d

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("P")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            if not getattr(autograd._engine_run_backward, "_profiled", False):
                inner = autograd._engine_run_backward

                def counted(*args: Any, **kw: Any) -> Any:
                    calls[0] += 1
                    return inner(*args, **kw)

                counted._profiled = True
                autograd._engine_run_backward = counted
            return self.d.sample({"x": x_dict["x"]})["t"].pow(2).mean(), x_dict

    try:
        torch.manual_seed(3)
        d = _critic()
        model = Model(Profiled(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05})
        losses = [float(model.train({"x": torch.randn(4, 3)})) for _ in range(3)]
    finally:
        autograd._engine_run_backward = before
    assert len(losses) == 3 and calls[0] >= 2


# ---- probe p440, an attack round on the above


def _reentry_program(depth: int) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic
        from pixyz.losses.losses import Loss

        torch.manual_seed(5)

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

            def forward(self, x: Any) -> dict:
                h = self.net(x)
                for _ in range(depth):  # (nodes that save nothing, more than the search reads)
                    h = h + 0.0
                return {"t": h}

        d = D()

        class L(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                x = x_dict["x"]
                s = d.sample({"x": x})["t"].sum()
                if depth:
                    torch.autograd.grad(s, x)
                else:  # a backward hook that differentiates (frees d's graph) inside a pass that keeps its own
                    a = torch.ones(1, requires_grad=True)
                    b = a * 2
                    b.register_hook(lambda g: (torch.autograd.grad(s, x), None)[1])
                    (b * 3).sum().backward(retain_graph=True)
                return d.sample({"x": x})["t"].pow(2).mean(), {}

        x = torch.randn(4, 3, requires_grad=True)
        value = L().eval({"x": x})
        value.backward()
        return value.detach(), x.grad

    return program


@pytest.mark.parametrize("depth", [0, 5000], ids=["hook", "deep"])
def test_a_pass_freed_by_a_hooks_backward_or_below_a_deep_graph_runs_again(depth: int) -> None:
    """(p440) A backward a hook starts inside another frees the pass; a graph deeper than the search is taken as
    freed: the network runs again, as under Pixyz."""
    ref, ours = run_both(_reentry_program(depth))
    assert_same(ref, ours)
