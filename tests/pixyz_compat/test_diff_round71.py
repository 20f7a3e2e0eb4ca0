"""Pixyz flows that probe p480 found refused or silently answered with the old code: a helper method named
``_inv`` (torch's ``Transform`` kept its inverse in the instance attribute ``_inv``, which hid the method: a
``RecursionError``), a ``forward``/``inverse`` behind a decorator written without ``functools.wraps`` (its
``(*args, **kwargs)`` lost ``y``), and a ``forward``/``inverse`` a later cell sets on one flow instance (Pixyz's
distributions and flow lists call ``self.flow.forward``, the instance's; ours called the class's). Each program runs
under Pixyz and here through the harness, from the same seed."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from pixyz_harness import assert_same, run_both


def _scale_flow() -> Any:
    """A Pixyz flow class ``z = x * exp(s)`` (its log-det the sum of ``s``), made inside a program."""
    import torch
    from pixyz.flows import Flow

    class Scale(Flow):
        def __init__(self, s: Any) -> None:
            super().__init__(2)
            self.s = torch.nn.Parameter(torch.tensor(s))

        def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
            if compute_jacobian:
                self._logdet_jacobian = self.s.sum().expand(x.shape[0])
            return x * torch.exp(self.s)

        def inverse(self, z: Any, y: Any = None) -> Any:
            return z * torch.exp(-self.s)

    return Scale


def test_a_flow_with_a_helper_method_named_inv() -> None:
    def program() -> Any:
        import torch
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flow

        class Scale(Flow):
            def __init__(self) -> None:
                super().__init__(2)
                self.s = torch.nn.Parameter(torch.tensor([0.5, -0.3]))

            def _inv(self, z: Any) -> Any:
                return z * torch.exp(-self.s)

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                if compute_jacobian:
                    self._logdet_jacobian = self.s.sum().expand(x.shape[0])
                return x * torch.exp(self.s)

            def inverse(self, z: Any, y: Any = None) -> Any:
                return self._inv(z)

        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_0")
        flow = Scale()
        p = InverseTransformedDistribution(prior, flow, var=["x"])
        draw = p.sample(batch_n=3)["x"]
        x = torch.tensor([[1.0, 2.0], [-0.5, 0.3]])
        return draw, p.get_log_prob({"x": x}), flow._inv(x)

    assert_same(*run_both(program))


def test_a_conditional_flow_behind_a_decorator_without_functools_wraps() -> None:
    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flow

        def logged(f: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return f(*args, **kwargs)
            return wrapper

        class CondAffine(Flow):
            def __init__(self) -> None:
                super().__init__(3)
                self.net = nn.Linear(2, 6)

            @logged
            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                h = self.net(y)
                s, t = torch.tanh(h[:, :3]), h[:, 3:]
                if compute_jacobian:
                    self._logdet_jacobian = s.sum(-1)
                return x * torch.exp(s) + t

            @logged
            def inverse(self, z: Any, y: Any = None) -> Any:
                h = self.net(y)
                s, t = torch.tanh(h[:, :3]), h[:, 3:]
                return (z - t) * torch.exp(-s)

        prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="p_0")
        p = InverseTransformedDistribution(prior, CondAffine(), var=["x"], cond_var=["y"])
        x, y = torch.randn(4, 3), torch.randn(4, 2)
        opt = torch.optim.SGD(p.parameters(), lr=0.1)
        before = p.get_log_prob({"x": x, "y": y})
        opt.zero_grad()
        (-before.mean()).backward()
        opt.step()
        return before, p.get_log_prob({"x": x, "y": y}), [q.detach().clone() for q in p.parameters()]

    assert_same(*run_both(program))


def _instance_patch(where: str) -> Callable[[], Any]:
    """A flow distribution over ``Scale`` layers; a later cell sets ``forward`` and ``inverse`` on one layer (the
    distribution's flow, or a layer of its ``FlowList``); scores and draws before and after, and after a step."""

    def program() -> Any:
        import torch
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import FlowList

        Scale = _scale_flow()
        f = Scale([0.5, -0.3])
        flow = f if where == "flow" else FlowList([Scale([0.1, 0.2]), f])
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_0")
        p = InverseTransformedDistribution(prior, flow, var=["x"])
        x = torch.tensor([[1.0, 2.0], [0.3, -0.4]])
        before = p.get_log_prob({"x": x})
        f.forward = lambda x, y=None, compute_jacobian=True: Scale.forward(f, x, y, compute_jacobian) + 1.0
        f.inverse = lambda z, y=None: Scale.inverse(f, z - 1.0, y)
        after = p.get_log_prob({"x": x})
        draw = p.sample(batch_n=2)["x"]
        opt = torch.optim.SGD(flow.parameters(), lr=0.1)
        loss = -p.get_log_prob({"x": x}).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return before, after, draw, p.get_log_prob({"x": x}), [q.detach().clone() for q in flow.parameters()]

    return program


@pytest.mark.parametrize("where", ["flow", "layer of a FlowList"])
def test_a_forward_and_inverse_set_on_a_flow_instance_are_called(where: str) -> None:
    ref, ours = run_both(_instance_patch(where))
    assert_same(ref, ours)
    assert not ours[0].allclose(ours[1])  # (the patch changes the density: the old code gave the first value again)


def test_a_forward_set_on_a_flow_instance_that_wraps_its_own_bound_forward() -> None:
    """``old = f.forward; f.forward = lambda ...: old(...) + 1`` on a Pixyz flow of the library (its forward calls
    back into the flow): drawn and scored through the new map."""

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import AffineCoupling

        class ST(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(2, 4)

            def forward(self, x: Any) -> Any:
                h = self.fc(x)
                return torch.tanh(h[:, :2]), h[:, 2:]

        f = AffineCoupling(in_features=2, mask_type="channel_wise", scale_translate_net=ST(), inverse_mask=False)
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p_0")
        p = TransformedDistribution(prior, f, var=["z"])
        old = f.forward
        f.forward = lambda x, y=None, compute_jacobian=True: old(x, y, compute_jacobian) + 0.5
        s = p.sample(batch_n=3)
        return s["z"], s["x"], p.get_log_prob(s), f.logdet_jacobian

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_a_forward_set_on_a_flow_instance_is_called_in_every_thread() -> None:
    """Thread A runs the flow's new forward (and waits inside it) while thread B scores through the same flow: B
    calls the new forward too (p483: the mark that the instance's method was running was the flow's, not the
    thread's, so B ran the class's). Events order the two threads."""

    def program() -> Any:
        import threading

        import torch
        from pixyz.distributions import InverseTransformedDistribution, Normal

        Scale = _scale_flow()
        f = Scale([0.5, -0.3])
        p = InverseTransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_0"), f,
                                           var=["x"])
        x = torch.tensor([[1.0, 2.0], [0.3, -0.4]])
        a_in, b_done = threading.Event(), threading.Event()

        def forward(x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
            if threading.current_thread().name == "A":
                a_in.set()
                b_done.wait(30)
            return Scale.forward(f, x, y, compute_jacobian) + 1.0

        before = p.get_log_prob({"x": x})
        f.forward = forward
        out: dict[str, Any] = {}

        def a() -> None:
            out["A"] = p.get_log_prob({"x": x})

        def b() -> None:
            a_in.wait(30)
            out["B"] = p.get_log_prob({"x": x})
            b_done.set()

        threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return before, out["A"], out["B"]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert not ours[0].allclose(ours[2])


def test_a_forward_set_on_a_flow_instance_after_compiling_is_followed() -> None:
    """A compiled model (``compile={"backend": "aot_eager"}``, pyro_dgm's option) over a flow list; a later cell sets
    a layer's ``forward``/``inverse`` after three steps, replaces it after five and deletes it after six: the
    compiled losses are the eager ones, which are Pixyz's (p483: the compiled model ran the class's forward)."""
    from pixyz_harness import run_pyro_dgm

    from pyro_dgm.utils.compat import compiles

    if not compiles():
        pytest.skip("torch.compile of pyro_dgm needs torch 2.10 or newer")

    def cell(compile: Any = None) -> Callable[[], Any]:
        def program() -> Any:
            import torch
            from pixyz.distributions import InverseTransformedDistribution, Normal
            from pixyz.flows import FlowList
            from pixyz.losses import LogProb
            from pixyz.models import Model

            Scale = _scale_flow()
            f, g = Scale([0.5, -0.3]), Scale([0.1, 0.2])
            prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_0")
            p = InverseTransformedDistribution(prior, FlowList([g, f]), var=["x"])
            options = {} if compile is None else {"compile": compile}
            model = Model((-LogProb(p)).mean(), distributions=[p], optimizer=torch.optim.SGD,
                          optimizer_params={"lr": 0.1}, **options)
            x = torch.randn(6, 2)
            out = []
            for i in range(8):
                if i == 3:
                    f.forward = lambda x, y=None, compute_jacobian=True: Scale.forward(f, x, y, compute_jacobian) + 1.0
                    f.inverse = lambda z, y=None: Scale.inverse(f, z - 1.0, y)
                if i == 5:
                    f.forward = lambda x, y=None, compute_jacobian=True: Scale.forward(f, x, y, compute_jacobian) * 3.0
                if i == 6:
                    del f.forward
                out.append(float(model.train({"x": x}).detach()))
            return out

        return program

    ref, eager = run_both(cell())
    assert eager == pytest.approx(ref, rel=1e-5, abs=1e-6)
    compiled = run_pyro_dgm(cell({"backend": "aot_eager"}))
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_a_flow_with_its_own_cache_size_attribute() -> None:
    """A flow's own value under torch's name ``_cache_size`` (p483: torch's inverse transform, made when the
    distribution was built, refused 7)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import InverseTransformedDistribution, Normal

        Scale = _scale_flow()
        f = Scale([0.5, -0.3])
        f._cache_size = 7
        p = InverseTransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_0"), f,
                                           var=["x"])
        return p.get_log_prob({"x": torch.tensor([[1.0, 2.0], [0.3, -0.4]])}), p.sample(batch_n=2)["x"], f._cache_size

    assert_same(*run_both(program))


def test_a_user_flow_before_a_batch_norm_scores_its_own_draw_with_pixyz_s_gradient() -> None:
    """``TransformedDistribution`` over ``FlowList([user affine, BatchNorm1d])`` in training mode, scoring its own
    draw: the batch norm normalizes the affine map away, so the log-density does not depend on its parameters
    (Pixyz's gradient, and a hand-written twin's, is 0; p484: ours went through the inverse recomputed with the
    draw's statistics held fixed, [3.02, 2.32, 7.25])."""

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import BatchNorm1d, Flow, FlowList

        class Affine(Flow):
            def __init__(self) -> None:
                super().__init__(3)
                self.a = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))
                self.b = nn.Parameter(torch.tensor([0.5, 0.0, -0.4]))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                if compute_jacobian:
                    self._logdet_jacobian = self.a.sum().expand(x.shape[0])
                return x * torch.exp(self.a) + self.b

            def inverse(self, z: Any, y: Any = None) -> Any:
                return (z - self.b) * torch.exp(-self.a)

        affine = Affine()
        q = TransformedDistribution(Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["u"],
                                           features_shape=[3]), FlowList([affine, BatchNorm1d(3)]), var=["x"])
        out = []
        for compute_jacobian in (False, True):
            s = q.sample(batch_n=4)
            lp = q.get_log_prob(s, compute_jacobian=compute_jacobian)
            out += [lp, *torch.autograd.grad(lp.sum(), [affine.a, affine.b])]
        return out

    import torch

    ref, ours = run_both(program)
    assert_same(ref, ours)
    for g in ours[1:3] + ours[4:6]:
        assert torch.allclose(g, torch.zeros_like(g), atol=1e-4)


def test_a_flow_list_of_layers_that_store_one_number_stores_one_number() -> None:
    """A user's layer storing its log-det as one number for the batch (``self.a.sum()``): Pixyz's ``FlowList`` sums
    the layers' stored values as they are, one number (p484: ours stored it expanded to the batch, and
    ``float(flow.logdet_jacobian)`` raised)."""

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flow, FlowList, Reverse

        class Scale(Flow):
            def __init__(self) -> None:
                super().__init__(2)
                self.a = nn.Parameter(torch.full((2,), 0.5))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                if compute_jacobian:
                    self._logdet_jacobian = self.a.sum()
                return x * torch.exp(self.a)

            def inverse(self, z: Any, y: Any = None) -> Any:
                return z * torch.exp(-self.a)

        x = torch.randn(3, 2)
        flows = FlowList([Scale(), Reverse(2)])
        flows.forward(x)
        p = InverseTransformedDistribution(Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"],
                                                  features_shape=[2]), FlowList([Scale()]), var=["x"])
        lp = p.get_log_prob({"x": x})
        return flows.logdet_jacobian, float(flows.logdet_jacobian), lp, p.logdet_jacobian

    assert_same(*run_both(program))


def test_a_flow_list_run_without_the_jacobian_calls_its_layers_without_it() -> None:
    """``FlowList.forward(x, compute_jacobian=False)`` passes ``compute_jacobian=False`` to a user's layer, which
    keeps the log-det it stored before (p484: ours passed True, and the layer stored a new one)."""

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.flows import Flow, FlowList

        asked: list = []

        class Scale(Flow):
            def __init__(self) -> None:
                super().__init__(2)
                self.a = nn.Parameter(torch.tensor([0.5, -0.2]))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                asked.append(compute_jacobian)
                if compute_jacobian:
                    self._logdet_jacobian = (self.a * x.abs().log().clamp(-1, 1)).sum(-1)
                return x * torch.exp(self.a)

            def inverse(self, z: Any, y: Any = None) -> Any:
                return z * torch.exp(-self.a)

        layer = Scale()
        flows = FlowList([layer])
        z1 = flows.forward(torch.randn(3, 2), compute_jacobian=False)
        before = layer.logdet_jacobian
        z2 = flows.forward(torch.randn(3, 2), compute_jacobian=True)
        kept = layer.logdet_jacobian
        z3 = flows.forward(torch.randn(3, 2), compute_jacobian=False)
        return z1, before is None, z2, kept, z3, layer.logdet_jacobian, asked

    assert_same(*run_both(program))


def _approximate_inverse_flow() -> Any:
    """A Pixyz flow ``z = x exp(a) + 0.3 tanh(x)`` whose ``inverse`` ignores the tanh term (approximate), counting
    its calls in a buffer."""
    import torch
    from torch import nn
    from pixyz.flows import Flow

    class Approx(Flow):
        def __init__(self) -> None:
            super().__init__(2)
            self.a = nn.Parameter(torch.tensor([0.3, -0.2]))
            self.register_buffer("inverse_calls", torch.zeros(()))

        def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
            if compute_jacobian:
                self._logdet_jacobian = torch.log(torch.exp(self.a) + 0.3 * (1 - torch.tanh(x) ** 2)).sum(-1)
            return x * torch.exp(self.a) + 0.3 * torch.tanh(x)

        def inverse(self, z: Any, y: Any = None) -> Any:
            self.inverse_calls += 1
            return z * torch.exp(-self.a)

    return Approx


def test_a_draw_scored_with_and_without_its_input_in_the_values() -> None:
    """A draw of a ``TransformedDistribution`` over a flow with an approximate inverse, scored with the draw's dict
    (which holds the input ``u``: Pixyz scores the prior at it) and with ``x`` alone (Pixyz scores the prior at its
    inverse of ``x``): values, gradients and how many times the inverse ran, as Pixyz (p486: the first fix of p484
    scored ``u`` in both, and with ``compute_jacobian=True`` ran the inverse twice). With ``compute_jacobian=True``
    Pixyz's log-det is the one at the inverse of ``x``, not at ``u``: with the dict, the prior's density at ``u``
    minus the log-det at another point; ours is the density of the draw there (porting.md), and the inverse runs
    once, as in Pixyz."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution

        f = _approximate_inverse_flow()()
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), f, var=["x"])
        same, calls, exact = [], [], []
        for compute_jacobian in (False, True):
            for with_input in (True, False):
                s = q.sample(batch_n=3)
                before = float(f.inverse_calls)
                lp = q.get_log_prob(s if with_input else {"x": s["x"]}, compute_jacobian=compute_jacobian)
                calls.append(float(f.inverse_calls) - before)
                if not compute_jacobian:
                    same += [lp, torch.autograd.grad(lp.sum(), f.a)[0]]
                elif with_input:
                    u, a = s["u"].detach(), f.a.detach()
                    exact += [lp.detach(), (torch.distributions.Normal(0.0, 1.0).log_prob(u)
                                            - torch.log(torch.exp(a) + 0.3 * (1 - torch.tanh(u) ** 2))).sum(-1)]
        return same, calls, exact

    import torch

    ref, ours = run_both(program)
    assert_same(ref[:2], ours[:2])
    assert ours[1] == [1.0] * 4
    assert torch.allclose(ours[2][0], ours[2][1], atol=1e-5)


def test_an_elbo_over_a_flow_with_an_approximate_inverse_trains_as_pixyz() -> None:
    """Pixyz's ``LogProb(q)`` in an ELBO scores ``q``'s draw without its input (``return_all=False``): the prior at
    the inverse of the draw (p486: 3 steps, losses 0.45 apart with the first fix of p484)."""

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.losses import Expectation, LogProb
        from pixyz.models import Model

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="p")
                self.fc = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                return {"loc": self.fc(x), "scale": torch.ones(2)}

        f = _approximate_inverse_flow()()
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), f, var=["x"])
        p, prior = P(), Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p_x")
        loss = -Expectation(q, LogProb(p) + LogProb(prior) - LogProb(q)).mean()
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
        y = torch.randn(4, 2)
        losses = [float(model.train({"y": y})) for _ in range(3)]
        return losses, f.a.detach().clone(), float(f.inverse_calls)

    assert_same(*run_both(program))


def test_a_transformed_distribution_over_a_flow_with_its_own_cache_size() -> None:
    """``_cache_size`` of the user's own on a flow drawn and scored through torch's inverse transform (p486: torch's
    ``_inv_call`` read it and looked for its cache, an ``AttributeError``)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution

        Scale = _scale_flow()
        f = Scale([0.5, -0.3])
        f._cache_size = 7
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), f, var=["x"])
        s = q.sample(batch_n=3)
        return s["x"], q.get_log_prob(s), q.get_log_prob({"x": torch.tensor([[1.0, 2.0]] * 3)})

    assert_same(*run_both(program))


def test_a_renaming_that_moves_each_name_onto_the_next() -> None:
    """``replace_var(a="b", b="c")`` of ``p(x|a) q(y|b)`` (probe p490): Pixyz renames one name after the other, in
    the keywords' order, so ``a`` ends as ``c`` and its result depends on that order (its score of ``x = 10``, ``y =
    -10`` given ``b = 10``, ``c = -10`` is -4e6 one way round); here every name is renamed at once, as written:
    ``p(x|b) q(y|c)`` whatever the order, and the score is the exact one, two unit-scale log-densities at their
    means (porting.md). Where Pixyz's order happens to agree (``b="c"`` first), its numbers are ours."""
    import math

    import torch

    def renamed(order: dict) -> Callable[[], Any]:
        def program() -> Any:
            import torch
            from pixyz.distributions import Normal

            px = Normal(loc="a", scale=torch.tensor(0.01), var=["x"], cond_var=["a"], name="p")
            py = Normal(loc="b", scale=torch.tensor(0.01), var=["y"], cond_var=["b"], name="q")
            r = (px * py).replace_var(**order)
            given = {"b": torch.full((1, 1), 10.0), "c": torch.full((1, 1), -10.0)}
            s = r.sample(dict(given))
            return (r.prob_factorized_text, sorted(r.cond_var), s["x"], s["y"],
                    r.get_log_prob({**given, "x": torch.full((1, 1), 10.0), "y": torch.full((1, 1), -10.0)}))

        return program

    exact = 2 * (-0.5 * math.log(2 * math.pi) - math.log(0.01))
    ref_agree, ours_agree = run_both(renamed({"b": "c", "a": "b"}))
    assert_same(ref_agree, ours_agree)
    ref, ours = run_both(renamed({"a": "b", "b": "c"}))
    assert ref[0] == "p(x|c)q(y|b)" and float(ref[4]) < -1e6  # (Pixyz's chained renaming)
    assert ours[0] == ours_agree[0] == "p(x|b)q(y|c)"
    assert float(ours[4]) == pytest.approx(exact, rel=1e-5)
    assert torch.allclose(ours[2], torch.full((1, 1), 10.0), atol=0.1)


def test_a_draw_scored_with_a_copy_of_its_input() -> None:
    """The draw's dict rebuilt with ``u.clone()`` or ``u.detach()``: Pixyz scores the prior at the dict's ``u``,
    whatever the tensor object (p489: the first ``given_input`` took only the draw's own tensor)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution

        f = _approximate_inverse_flow()()
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), f, var=["x"])
        out = []
        for copy in (lambda t: t.clone(), lambda t: t.detach()):
            s = q.sample(batch_n=3)
            lp = q.get_log_prob({"x": s["x"], "u": copy(s["u"])})
            out += [lp, torch.autograd.grad(lp.sum(), f.a)[0]]
        return out

    assert_same(*run_both(program))


def test_a_flow_list_with_a_planar_layer_scores_its_draw_as_pixyz() -> None:
    """``FlowList([PlanarFlow, approximate flow])`` (either order) scoring its draw from ``x`` alone: Pixyz's list
    inverse raises at the planar layer and answers the draw's input, the exact density (p489: ours inverted every
    layer numerically); an ELBO-like loss scores so at each step."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import FlowList, PlanarFlow
        from pixyz.losses import Expectation, LogProb
        from pixyz.models import Model

        Approx = _approximate_inverse_flow()
        out = []
        for planar_first in (True, False):
            layers = [PlanarFlow(2), Approx()]
            flow = FlowList(layers if planar_first else layers[::-1])
            q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), flow, var=["x"])
            s = q.sample(batch_n=3)
            out.append(q.get_log_prob({"x": s["x"]}))
        flow = FlowList([PlanarFlow(2), Approx()])
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), flow, var=["x"],
                                    name="q")
        prior = Normal(loc=torch.ones(2), scale=torch.ones(2), var=["x"], name="p")
        model = Model(Expectation(q, LogProb(q) - LogProb(prior)).mean(), distributions=[q],
                      optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
        out.append([float(model.train({})) for _ in range(4)])
        return out

    assert_same(*run_both(program))


def test_a_draw_inside_a_user_s_term_keeps_its_input() -> None:
    """``q.sample()`` and ``q.get_log_prob`` of it inside a user's ``Loss.forward`` (p489: within a loss evaluation
    the draw's input was looked up without gradients, missed the evaluation's memory, and came from the approximate
    inverse: ``f(u) != x``)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.losses.losses import Loss

        f = _approximate_inverse_flow()()
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), f, var=["x"],
                                    name="q")
        got: list = []

        class K(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["x"])

            @property
            def _symbol(self) -> Any:
                import sympy

                return sympy.Symbol("k")

            def forward(self, x_dict: Any, **kwargs: Any) -> Any:
                s = q.sample(batch_n=3)
                lp = q.get_log_prob(s)
                got.extend([s["u"].detach(), s["x"].detach(), lp.detach()])
                return lp.mean(), {}

        K().eval({"x": torch.zeros(1)})
        u, x, lp = got
        with torch.no_grad():
            return u, f.forward(u, compute_jacobian=False) - x, lp

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert float(ours[1].abs().max()) == 0.0


def test_an_inverse_under_no_grad_inside_a_user_s_term_carries_no_gradient() -> None:
    """``q.inverse(x)`` of a draw under ``torch.no_grad()`` inside a user's term (p491: a first fix of p489 let the
    evaluation's memory, made with gradients, answer it with the draw's input, which carried one into the prior's
    network)."""

    def program() -> Any:
        import sympy
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import BatchNorm1d
        from pixyz.losses.losses import Loss

        flow = BatchNorm1d(2)
        flow.eval()
        lin = torch.nn.Linear(1, 2)

        class Prior(Normal):
            def __init__(self) -> None:
                super().__init__(var=["u"], cond_var=["c"], name="r")
                self.l = lin

            def forward(self, c: Any) -> dict:
                return {"loc": self.l(c), "scale": torch.ones(2)}

        q = TransformedDistribution(Prior(), flow, var=["x"], name="q")
        seen: list = []

        class K(Loss):
            def __init__(self) -> None:
                super().__init__(input_var=["c"])

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("k")

            def forward(self, x_dict: Any, **kwargs: Any) -> Any:
                s = q.sample(x_dict, reparam=True)
                with torch.no_grad():
                    u = q.inverse(s["x"])
                seen.append(u.requires_grad)
                return (u ** 2).sum(-1).mean(), {}

        value = K().eval({"c": torch.ones(3, 1)})
        return seen[0], value.requires_grad, value.detach()

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[:2] == (False, False)


def test_a_stale_input_in_the_values_is_scored_as_pixyz_for_library_and_user_flows() -> None:
    """The last draw's ``x`` scored with the previous draw's ``u`` (same shape): Pixyz puts the dict's ``u`` over its
    inverse for any flow; ours did for a flow with an inverse written for Pixyz but not for a library flow (p491)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import BatchNorm1d

        out = []
        for flow in (BatchNorm1d(2), _approximate_inverse_flow()()):
            flow.eval()
            q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), flow, var=["x"])
            q.sample(batch_n=3)  # (a batch norm's statistics: its eval-mode running ones)
            s1 = q.sample(batch_n=3)
            s2 = q.sample(batch_n=3)
            out.append(q.get_log_prob({"x": s2["x"], "u": s1["u"]}))
        return out

    assert_same(*run_both(program))
