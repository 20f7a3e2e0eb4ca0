"""Sixty-seventh round, under Pixyz and here (:mod:`pixyz_harness`):

* an ``ActNorm2d`` whose subclass, or the flow itself, overrides Pixyz's ``_center``/``_scale`` was refused (the
  hooks were not called here): they are called now where overridden, as Pixyz's ``forward`` and ``inverse`` call
  them, and a Glow-style model trained with a softplus-scaled ``_scale`` gives Pixyz's numbers.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _hooked_actnorm_program(where: str) -> Any:
    def program() -> Any:
        import torch
        import torch.nn.functional as F
        from torch import optim

        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import ActNorm2d, FlowList
        from pixyz.losses import LogProb
        from pixyz.models import Model

        def soft_scale(self, x, compute_jacobian=True, inverse=False):  # (a softplus scale, its own log-det)
            s = F.softplus(self.logs) + 0.5
            x = x / s if inverse else x * s
            if compute_jacobian:
                return x, torch.log(s).sum() * x.shape[2] * x.shape[3]
            return x, None

        def shifted_center(self, x, inverse=False):
            return x - 2 * self.bias if inverse else x + 2 * self.bias

        if where == "subclass":
            class SoftActNorm(ActNorm2d):
                _scale = soft_scale
            first = SoftActNorm(2)
        else:
            first = ActNorm2d(2)
            first._center = shifted_center.__get__(first)
        f = FlowList([first, ActNorm2d(2)])
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 3, 3],
                       name="p_prior")
        p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
        torch.manual_seed(0)
        x = torch.randn(5, 2, 3, 3) * 3 + 1
        model = Model(loss=-LogProb(p).mean(), distributions=[p], optimizer=optim.SGD, optimizer_params={"lr": 0.05})
        out = {"log_prob": p.get_log_prob({"x": x}), "losses": [model.train({"x": x}).item() for _ in range(3)],
               "params": [t.detach().clone() for t in f.parameters()]}
        with torch.no_grad():
            z = f.forward(x)
            out["z"], out["logdet"] = z, f.logdet_jacobian
            out["inverse"] = f.inverse(z)
        return out

    return program


@pytest.mark.parametrize("where", ["subclass", "instance"])
def test_actnorm_hooks_overridden_are_called_as_in_pixyz(where: str) -> None:
    ref, ours = run_both(_hooked_actnorm_program(where))
    assert_same(ref["z"], ours["z"], atol=1e-5)
    assert_same(ref["inverse"], ours["inverse"], atol=1e-5)
    assert_same(ref["logdet"], ours["logdet"], atol=1e-4)  # (one number: ActNorm2d's is constant over the batch)
    assert_same(ref["log_prob"], ours["log_prob"], atol=1e-4)
    assert_same(ref["losses"], ours["losses"], atol=1e-4)
    assert_same(ref["params"], ours["params"], atol=1e-5)


def test_an_actnorm_scale_hook_gives_the_log_det_of_its_own_map() -> None:
    """The hooked map's log-det, forward and (through the forward at x) inverse, equals the autograd Jacobian's."""
    import torch.nn.functional as F

    from pyro_dgm.flows import ActNorm2d

    class SoftActNorm(ActNorm2d):
        def _scale(self, x, compute_jacobian=True, inverse=False):  # type: ignore[no-untyped-def]
            s = F.softplus(self.logs) + 0.5
            x = x / s if inverse else x * s
            return (x, torch.log(s).sum() * x.shape[2] * x.shape[3]) if compute_jacobian else (x, None)

    f = SoftActNorm(2).eval()
    with torch.no_grad():
        f.logs.copy_(torch.tensor([0.3, -1.2]).reshape(1, 2, 1, 1))
        f.bias.copy_(torch.tensor([0.5, 2.0]).reshape(1, 2, 1, 1))
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    f = f.double()
    z, ld = f.forward_with_logdet(x)
    jac = torch.autograd.functional.jacobian(lambda v: f.forward(v.reshape(1, 2, 2, 2)).reshape(-1), x[0].reshape(-1))
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(ld, expected.expand(3))
    back, ld_inv = f.inverse_with_logdet(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, expected.expand(3))


def test_an_actnorm_scale_hook_returning_no_log_det_is_named() -> None:
    from pyro_dgm.flows import ActNorm2d

    class Bad(ActNorm2d):
        def _scale(self, x, compute_jacobian=True, inverse=False):  # type: ignore[no-untyped-def]
            return x, None

    with pytest.raises(TypeError, match=r"Bad\(.*_scale\(x, compute_jacobian=True\) must return \(x, logdet\)"):
        Bad(2).eval().forward_with_logdet(torch.randn(1, 2, 2, 2))


# ---- probe p443, object lifetime and identity: weights put in place through .data twice


def _rescale_twice(w: torch.Tensor) -> None:
    """New values through ``.data`` twice: the second often lands at the address the first freed, the one the
    weights had (torch's CPU allocator gives a freed block of 8 KiB back)."""
    w.data = w.data * 3.0
    w.data = w.data / 2.0


def test_a_flow_scores_its_draw_at_weights_put_in_place_through_data_twice() -> None:
    """A flow's memory of its draw is not answered at new weights that landed at the old weights' address: the
    log-density equals the change of variables computed by hand (the inverse, and the autograd Jacobian's log-det).
    Pixyz's own default (``compute_jacobian=False``) subtracts the draw's log-det, a known error of Pixyz's."""
    from torch import nn

    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.flows import AffineCoupling

    torch.manual_seed(0)
    d = 32

    class ST(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(d, 2 * d)

        def forward(self, x: torch.Tensor) -> tuple:
            h = self.lin(x)
            return torch.tanh(h[:, :d]), h[:, d:]

    f = AffineCoupling(d, scale_translate_net=ST())
    p = TransformedDistribution(Normal(loc=torch.zeros(d), scale=torch.ones(d), var=["z"], features_shape=[d]), f,
                                var=["x"])
    for _ in range(3):
        x = p.sample(batch_n=3)["x"]
        _rescale_twice(f.scale_translate_net.lin.weight)
        with torch.no_grad():
            z = f.inverse(x)
        jac = torch.autograd.functional.jacobian(lambda v: f.forward(v, compute_jacobian=False).sum(0), z)
        logdet = torch.stack([torch.linalg.slogdet(jac[:, b, :])[1] for b in range(3)])
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - logdet
        torch.testing.assert_close(p.get_log_prob({"x": x}).detach(), expected, rtol=1e-4, atol=1e-4)


def test_the_sample_dict_cache_sees_weights_put_in_place_through_data_twice() -> None:
    """``lru_cache_for_sample_dict`` drops its entries when the weights are new values, also where they landed at
    the old address (Pixyz's cache, keyed by the inputs alone, answers with the old weights' parameters)."""
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils import lru_cache_for_sample_dict

    torch.manual_seed(0)

    class Encoder(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(32, 32)

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006 (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    q = Encoder()
    x = torch.randn(4, 32)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            for _ in range(3):
                q.get_params({"x": x})
                _rescale_twice(q.lin.weight)
                torch.testing.assert_close(q.get_params({"x": x})["loc"], q.lin(x))


def test_an_evaluation_sees_weights_put_in_place_through_data_twice_between_two_uses() -> None:
    """Within one loss evaluation, a user's term that puts new weights in place through ``.data`` twice between two
    uses of an encoder: the second use computes with the new weights (hand-written), also where they landed at the
    old address (Pixyz's cache, keyed by the inputs, gives the old weights' value there)."""
    import sympy
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.losses.losses import Loss

    torch.manual_seed(0)

    class Encoder(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    q = Encoder()

    class Rescale(Loss):
        def __init__(self) -> None:
            super().__init__(["x"])

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("r")

        def forward(self, x_dict: dict = {}, **kwargs: Any) -> tuple:  # noqa: B006 (Pixyz's signature)
            _rescale_twice(q.lin.weight)
            return torch.zeros(()), {}

    x, z = torch.randn(4, 32), torch.randn(4, 32)
    for _ in range(3):
        w_before = q.lin.weight.detach().clone()
        got = (LogProb(q) + Rescale() + 10 * LogProb(q)).eval({"x": x, "z": z})

        def log_q(w: torch.Tensor) -> torch.Tensor:
            loc = x @ w.T + q.lin.bias.detach()
            return torch.distributions.Normal(loc, 1.0).log_prob(z).sum(-1)

        expected = log_q(w_before) + 10 * log_q(q.lin.weight.detach())
        torch.testing.assert_close(got.detach(), expected)


# ---- probe p441, an attack round on the backward watch: a Deterministic runs at each use where a user's term runs


def _critic_program(case: str) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn
        from torch.utils.checkpoint import checkpoint

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        torch.manual_seed(3)
        calls = [0]

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

            def body(self, x: Any) -> Any:
                calls[0] += 1
                return self.net(x)

            def forward(self, x: Any) -> dict:
                return {"t": checkpoint(self.body, x, use_reentrant=False) if case == "checkpoint" else self.body(x)}

        d = D()
        weight = d.net[0].weight

        given = case.startswith("given")  # (the term differentiates through the draw an Expectation gives it)

        class GradNorm(Loss):  # a logged gradient norm, weighted 0, after a use it holds (case "held")
            def __init__(self) -> None:
                super().__init__(input_var=["t"] if given else ["x"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("G")

            def forward(self, x_dict: dict, **kwargs: Any) -> tuple:
                if given:
                    held, t = 0, x_dict["t"]
                else:
                    x = x_dict["x"]
                    held = d.sample({"x": x})["t"].mean() if case in ("held", "checkpoint") else 0
                    t = d.sample({"x": x})["t"]
                g, = torch.autograd.grad(t.sum(), weight)
                return held + 0 * g.norm(), {}

        pn = Normal(loc="t", scale=torch.tensor(1.0), var=["z"], cond_var=["t"], name="pn")
        if case == "given_first":
            loss = Expectation(d, GradNorm()) - Expectation(d, LogProb(pn)).mean()
        elif case == "given_last":
            loss = -Expectation(d, LogProb(pn)).mean() + Expectation(d, GradNorm())
        else:
            loss = -Expectation(d, LogProb(pn)).mean() + GradNorm()
        model = Model(loss, distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05})
        store: dict = {}

        def pack(t: Any) -> Any:
            key = object()
            store[key] = t
            return key

        def unpack(key: Any) -> Any:  # (each saved tensor handed back once)
            return store.pop(key)

        losses = []
        for _ in range(3):
            batch = {"x": torch.randn(4, 3), "z": torch.randn(4, 2)}
            if case == "unpack_once":
                with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                    losses.append(model.train(batch))
            else:
                losses.append(model.train(batch))
        return losses, weight.detach().clone(), calls[0]

    return program


@pytest.mark.parametrize("case", ["after_builtin", "held", "unpack_once", "checkpoint", "given_first",
                                  "given_last"])
def test_a_deterministic_runs_at_each_use_where_a_users_term_differentiates(case: str) -> None:
    """A pyro_dgm term's pass of a ``Deterministic`` (or one the user's term holds), then a gradient through another
    use at the same input without ``retain_graph``: under Pixyz two passes, so the training backward works; a shared
    pass failed here ("Trying to backward through the graph a second time"). The search for freed graphs that
    replaced the sharing after a backward ran the user's unpack-once saved-tensor hooks (a ``KeyError``) and
    recomputed a checkpointed network once per saved tensor: the network runs as often as under Pixyz. (p447)
    ``Expectation(d, GradNorm())``, whose term differentiates through the draw it is given, in either order: a
    formula with a user's term shares no pass (sharing only while the term ran handed it a shared one)."""
    ref, ours = run_both(_critic_program(case))
    assert_same(ref, ours)


def test_values_a_condition_gives_a_call_without_data_are_its_data() -> None:
    """(probe p444) ``poutine.condition(joint.model, {"z": z})`` with N rows of a latent is the call given ``z=z``:
    the same sites in a data plate of N, the other variable drawn per row; its log-joint is a plain-Pyro model's
    with the same plate, replayed at the same draws."""
    import pyro
    import pyro.distributions as pd
    from pyro import poutine
    from torch import nn

    from pyro_dgm.distributions import Normal

    class Z(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="p")
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones(1)}

    pz = Z()
    joint = pz * Normal(loc=0.0, scale=1.0, var=["x"], features_shape=[3], name="p")
    z = torch.randn(2, 2)

    def twin() -> None:
        with pyro.plate("data", 2):
            x = pyro.sample("x", pd.Normal(torch.zeros(3), torch.ones(3)).to_event(1))
            pyro.sample("z", pd.Normal(pz.lin(x), torch.ones(1)).to_event(1), obs=z)

    traces = []
    for model in (lambda: joint.model(z=z), poutine.condition(joint.model, {"z": z})):
        pyro.set_rng_seed(0)
        traces.append(poutine.trace(model).get_trace())
    given, conditioned = traces
    for tr in traces:
        assert tr.nodes["x"]["value"].shape == (2, 3)
        assert [f.name for f in tr.nodes["x"]["cond_indep_stack"]] == ["data"]
    torch.testing.assert_close(given.nodes["x"]["value"], conditioned.nodes["x"]["value"])
    expected = poutine.trace(poutine.replay(twin, trace=given)).get_trace().log_prob_sum()
    torch.testing.assert_close(given.log_prob_sum(), expected)
    torch.testing.assert_close(conditioned.log_prob_sum(), expected)


def test_a_deterministic_called_inside_another_networks_forward_runs_at_each_call() -> None:
    """A proposal ``q(z|x)`` whose mean follows an energy network's gradient (``torch.autograd.grad`` inside its
    ``forward``, without ``retain_graph``) beside a pyro_dgm term over the same energy at the same input: under Pixyz
    two passes; a shared one failed here in the training backward (p441, documented since p436)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb
        from pixyz.models import Model

        torch.manual_seed(5)

        class E(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["e"], cond_var=["x"], name="E")
                self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

            def forward(self, x: Any) -> dict:
                return {"e": self.net(x)}

        energy = E()

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                g, = torch.autograd.grad(energy.sample({"x": x})["e"].sum(), x)
                return {"loc": self.lin(x) - 0.1 * g, "scale": torch.ones_like(x)}

        q = Q()
        pe = Normal(loc="e", scale=torch.tensor(1.0), var=["w"], cond_var=["e"], name="pe")
        loss = (-LogProb(q) - Expectation(energy, LogProb(pe))).mean()
        model = Model(loss, distributions=[q, energy], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05})
        losses = [model.train({"x": torch.randn(4, 2, requires_grad=True), "z": torch.randn(4, 2),
                               "w": torch.randn(4, 1)}) for _ in range(3)]
        return losses, [p.detach().clone() for p in (*energy.parameters(), *q.parameters())]

    ref, ours = run_both(program)
    assert_same(ref, ours)


# ---- probe p445, an attack round on the above


def _soft_scale(self: Any, x: torch.Tensor, compute_jacobian: bool = True, inverse: bool = False) -> tuple:
    s = torch.nn.functional.softplus(self.logs) + 0.5
    x = x / s if inverse else x * s
    return (x, torch.log(s).sum() * x.shape[2] * x.shape[3]) if compute_jacobian else (x, None)


@pytest.mark.parametrize("dist,where", [("td", "instance"), ("td", "class"), ("itd", "instance"),
                                        ("itd", "class")])
def test_an_actnorm_hook_set_after_a_draw_is_seen_when_the_draw_is_scored(dist: str, where: str) -> None:
    """A hook set after the flow drew (on the layer or its class): the draw is scored with the new map, as Pixyz's
    ``compute_jacobian=True`` and the change of variables give it (the flow's memory of the draw answered)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
        from pixyz.flows import ActNorm2d, FlowList

        class A(ActNorm2d):
            pass

        torch.manual_seed(3)
        a = A(2)
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 3, 3], name="pp")
        cls = TransformedDistribution if dist == "td" else InverseTransformedDistribution
        p = cls(prior=prior, flow=FlowList([a]), var=["x"])
        kwargs = {"compute_jacobian": True} if dist == "td" else {}
        x = p.sample(batch_n=4)["x"]
        before = p.get_log_prob({"x": x}, **kwargs)
        if where == "instance":
            a._scale = _soft_scale.__get__(a)
        else:
            A._scale = _soft_scale
        return before, p.get_log_prob({"x": x}, **kwargs)

    ref, ours = run_both(program)
    assert_same(ref, ours, atol=1e-4)


@pytest.mark.parametrize("where", ["instance", "class"])
def test_an_actnorm_hook_set_after_the_step_was_compiled_is_called(where: str) -> None:
    """``Model(compile=True)``: a hook set on the layer after the step was compiled is called, as eagerly (the
    compiled step kept the built-in map: Dynamo does not guard on a key of a module's ``__dict__``)."""
    from torch import optim

    from pyro_dgm.distributions import InverseTransformedDistribution, Normal
    from pyro_dgm.flows import ActNorm2d
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    def run(compile: bool) -> list:
        torch.manual_seed(1)
        x = torch.randn(6, 3, 4, 4) * 2 + 0.5

        class A(ActNorm2d):
            pass

        a = A(3)
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3, 4, 4])
        p = InverseTransformedDistribution(prior=prior, flow=a, var=["x"])
        model = Model(loss=-LogProb(p).mean(), distributions=[p], optimizer=optim.SGD,
                      optimizer_params={"lr": 0.05}, compile=compile)
        losses = [model.train({"x": x}).item() for _ in range(2)]
        if where == "instance":
            a._scale = _soft_scale.__get__(a)
        else:
            A._scale = _soft_scale
        return losses + [model.train({"x": x}).item() for _ in range(2)]

    eager = run(False)
    assert eager[2] != pytest.approx(eager[1])  # (the hook changes the map)
    assert run(True) == pytest.approx(eager, rel=1e-5)


def test_a_converted_flow_or_cached_encoder_frees_its_old_weights() -> None:
    """The flows' memory and ``lru_cache_for_sample_dict`` tell new weights by their storages without holding them:
    after ``.half()`` the float32 weights they saw are freed (they were held until the next call)."""
    import gc
    import weakref

    from torch import nn

    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.flows import AffineCoupling
    from pyro_dgm.utils import lru_cache_for_sample_dict

    class ST(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 8)

        def forward(self, x: torch.Tensor) -> tuple:
            h = self.lin(x)
            return torch.tanh(h[:, :4]), h[:, 4:]

    class Encoder(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(4, 4)

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006 (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    f = AffineCoupling(4, scale_translate_net=ST())
    p = TransformedDistribution(Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4]), f,
                                var=["x"])
    q = Encoder()
    x = p.sample(batch_n=3)["x"]
    p.get_log_prob({"x": x})
    q.get_params({"x": torch.randn(2, 4)})
    old = [weakref.ref(w.untyped_storage()) for w in (f.scale_translate_net.lin.weight, q.lin.weight)]
    f.half()
    q.half()
    gc.collect()
    assert [r() for r in old] == [None, None]


def test_a_formula_with_a_users_term_runs_a_deterministic_at_each_use() -> None:
    """(p445, p447) In a formula with a user's term, wherever it stands, a ``Deterministic`` runs at each use, as
    under Pixyz (the user's term may differentiate through a pass a pyro_dgm term hands it); a formula of
    pyro_dgm's terms only shares one pass; the values are those computed by hand."""
    import sympy
    from torch import nn

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation, LogProb
    from pyro_dgm.losses.losses import Loss

    calls = []

    class D(Deterministic):
        memoizable = True  # opts in to sharing one pass between uses (what this test is about)

        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            calls.append(1)
            return {"t": self.net(x)}

    d = D()

    class Uses(Loss):
        def __init__(self, k: int) -> None:
            super().__init__(input_var=["x"])
            self.k = k

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("U")

        def forward(self, x_dict: dict, **kwargs: Any) -> tuple:
            return sum(d.sample({"x": x_dict["x"]})["t"].sum() for _ in range(self.k)), {}

    p = Normal(loc="t", scale=torch.tensor(1.0), var=["y"], cond_var=["t"], name="p")
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    terms = [Expectation(d, LogProb(p)).mean() for _ in range(3)]
    calls.clear()
    (terms[0] + terms[1] + terms[2]).eval({"x": x, "y": y})
    assert len(calls) == 1
    for k, runs in ((0, 3), (2, 5)):
        calls.clear()
        value = (Uses(k) + terms[0] + terms[1] + terms[2]).eval({"x": x, "y": y})
        assert len(calls) == runs
        t = d.net(x)
        expected = 2 * t.sum() + 3 * torch.distributions.Normal(t, 1.0).log_prob(y).sum(-1).mean()
        torch.testing.assert_close(value, expected if k else expected - 2 * t.sum())


def test_a_product_hook_set_after_the_step_was_compiled_is_called() -> None:
    """``Model(compile=True)``: ``poe._compute_expert_params = f`` set on the product after the step was compiled is
    called, as eagerly."""
    from torch import nn, optim

    from pyro_dgm.distributions import Normal, ProductOfNormal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Expert(Normal):
        def __init__(self, name: str) -> None:
            super().__init__(var=["z"], cond_var=[name], name=f"q_{name}")
            self.lin = nn.Linear(2, 2)

        def forward(self, **inputs: torch.Tensor) -> dict:
            h = self.lin(next(iter(inputs.values())))
            return {"loc": h, "scale": torch.ones_like(h)}

    def tempered(loc: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor) -> tuple:
        return loc.mean(0), scale[0] * 1.5

    def run(compile: bool) -> list:
        torch.manual_seed(0)
        poe = ProductOfNormal([Expert("a"), Expert("b")], name="q")
        model = Model(-LogProb(poe).mean(), distributions=[poe], optimizer=optim.SGD, optimizer_params={"lr": 0.1},
                      compile=compile)
        data = {"a": torch.randn(5, 2), "b": torch.randn(5, 2), "z": torch.randn(5, 2)}
        losses = [model.train(data).item() for _ in range(2)]
        poe._compute_expert_params = tempered
        return losses + [model.train(data).item() for _ in range(2)]

    eager = run(False)
    assert eager[2] != pytest.approx(eager[1], rel=1e-3)
    assert run(True) == pytest.approx(eager, rel=1e-5)


# ---- probe p447, an attack round on the memoizer's last changes


@pytest.mark.parametrize("change", ["detach_", "data"])
def test_a_shared_output_a_consumer_changes_runs_again_for_the_next_use(change: str) -> None:
    """A network after a ``Deterministic`` used twice stops the gradient in place on its input (``h.detach_()``,
    p447) or gives it other values through ``h.data = ...`` (p448): the next use runs the forward again, as Pixyz's
    second run does (the reuse copied the detached tensor, so no gradient reached the network, or the clamped
    values)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb

        torch.manual_seed(0)

        class H(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: Any) -> dict:
                return {"h": torch.tanh(self.fc(x))}

        class Q(Normal):
            def __init__(self, name: str, first: bool) -> None:
                super().__init__(var=["y"], cond_var=["h"], name=name)
                self.fc = nn.Linear(3, 3)
                self.first = first

            def forward(self, h: Any) -> dict:
                if self.first and change == "detach_":
                    h.detach_()
                elif self.first:
                    h.data = h.data.clamp(-0.1, 0.1)
                return {"loc": self.fc(h), "scale": torch.ones(3)}

        f = H()
        loss = (Expectation(f, LogProb(Q("q1", True))) + Expectation(f, LogProb(Q("q2", False)))).mean()
        value = loss.eval({"x": torch.randn(4, 3), "y": torch.randn(4, 3)})
        value.backward()
        return value, f.fc.weight.grad

    ref, ours = run_both(program)
    assert_same(ref, ours, atol=1e-5)


def test_a_hook_on_a_deterministics_output_sees_the_gradient_of_its_other_outputs() -> None:
    """(A guard, p447) A hook and ``retain_grad`` on the ``h`` a ``Deterministic`` returned beside ``m = lin(h)``
    see the gradient that reaches ``h`` through ``m``, as on Pixyz's tensor (views of the outputs handed to a first
    use missed it)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb

        torch.manual_seed(0)
        kept = []

        class Enc(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h", "m"], cond_var=["x"], name="f")
                self.fc, self.out = nn.Linear(3, 3), nn.Linear(3, 2)

            def forward(self, x: Any) -> dict:
                h = torch.tanh(self.fc(x))
                return {"h": h, "m": self.out(h)}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc = nn.Linear(3, 2)

            def forward(self, h: Any) -> dict:
                h.retain_grad()
                kept.append(h)
                h.register_hook(lambda g: g.clamp(-0.01, 0.01))
                return {"loc": self.fc(h), "scale": torch.ones(2)}

        f, q = Enc(), Q()
        pm = Normal(loc="m", scale=torch.tensor(1.), var=["y"], cond_var=["m"], name="pm")
        loss = Expectation(f, LogProb(q) + LogProb(pm)).mean()
        value = loss.eval({"x": torch.randn(4, 3), "z": torch.randn(4, 2), "y": torch.randn(4, 2)})
        value.backward()
        return value, f.fc.weight.grad, kept[0].grad

    ref, ours = run_both(program)
    assert_same(ref, ours)
