"""Forty-fifth round: a product of experts whose weights are far from 1 (probe p260's fuzzer), under Pixyz and here
(:mod:`pixyz_harness`), and against the closed form in float64.

The product of ``N(mu_k, s_k^2)`` with weights ``w_k`` has precision ``sum_k w_k / s_k^2``. Pixyz computes each
precision directly, which is right wherever every ``w_k / s_k^2`` is a normal float32; pyro_dgm computes them relative
to the largest one, so it stays right beyond that range too.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixyz_harness import run_both, run_pyro_dgm

from pyro_dgm.distributions.poe import _combine

WEIGHTS = [1e-30, 1e-10, 1e-3, 1.0, 1e3, 1e10, 1e30]
SCALES = [1e-15, 1e-3, 1.0, 1e3, 1e15]
CASES = list(itertools.product(WEIGHTS, WEIGHTS, [1.0, 1e-3], SCALES, SCALES))


def _exact(wa: float, wb: float, w0: float, sa: float, sb: float) -> tuple[float, float]:
    """The product of the standard prior (weight w0), N(5, sa^2) (weight wa) and N(1, sb^2) (weight wb), in float64."""
    t = [w0, wa / sa ** 2, wb / sb ** 2]
    total = sum(t)
    return (t[1] * 5.0 + t[2] * 1.0) / total, total ** -0.5


def _products() -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    out = []
    for wa, wb, w0, sa, sb in CASES:
        a = Normal(loc="xa", scale=torch.tensor([sa]), var=["z"], cond_var=["xa"], name="a")
        b = Normal(loc="xb", scale=torch.tensor([sb]), var=["z"], cond_var=["xb"], name="b")
        p = ProductOfNormal([a, b], weight_modalities=[w0, wa, wb])
        params = p.get_params({"xa": torch.tensor([[5.0]]), "xb": torch.tensor([[1.0]])})
        out.append((float(params["loc"].reshape(-1)[0]), float(params["scale"].reshape(-1)[0])))
    return out


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= 1e-5 * abs(want) + 1e-37  # float32's rounding of a few operations, with room (and
    # an exact value below float32's normal numbers, 6e-60 with two tiny weights, is 0 or a subnormal)


def test_weights_far_from_1_give_pixyzs_product_wherever_pixyzs_is_right_and_the_exact_one_elsewhere() -> None:
    ref, ours = run_both(_products)
    pixyz_right = 0
    for case, (pl, ps), (ol, os_) in zip(CASES, ref, ours):
        loc, scale = _exact(*case)
        assert _close(ol, loc) and _close(os_, scale), (case, (ol, os_), (loc, scale))
        if _close(pl, loc) and _close(ps, scale):
            pixyz_right += 1
            assert _close(ol, pl) and _close(os_, ps), (case, (ol, os_), (pl, ps))
    assert pixyz_right > 2000  # (Pixyz's precisions leave float32's range in the rest: 0 or inf)


@pytest.mark.parametrize("wa, wb, w0", [(1e-30, 1e30, 1.0), (1e-30, 1e30, 1e-3), (1e30, 1e-30, 1.0)])
def test_a_tiny_weight_on_the_most_certain_expert_does_not_cut_a_heavily_weighted_one(wa, wb, w0) -> None:
    # (the reference was the smallest scale whatever its weight: the other expert's relative precision, 1e30 *
    # (1e-15 / 1e15)**2 = 1e-30, underflowed in float32, and the mean was 2.5 where it is 2)
    sa, sb = (1e-15, 1e15) if wa < wb else (1e15, 1e-15)
    terms = [(torch.tensor(w0), torch.ones(1, 1), torch.zeros(1, 1), False),
             (torch.tensor(wa), torch.tensor([[sa]]), torch.tensor([[5.0]]), False),
             (torch.tensor(wb), torch.tensor([[sb]]), torch.tensor([[1.0]]), False)]
    loc, scale = _combine(terms)
    want_loc, want_scale = _exact(wa, wb, w0, sa, sb)
    assert _close(float(loc), want_loc) and _close(float(scale), want_scale)


def _float64_product(ws: list[float], ss: list[float], ms: list[float]) -> tuple[Any, Any]:
    t = [w / s ** 2 for w, s in zip(ws, ss)]
    total = math.fsum(t)
    return math.fsum(ti * m for ti, m in zip(t, ms)) / total, total ** -0.5, t, total


@settings(max_examples=200, deadline=None)
@given(logw=st.lists(st.floats(-30, 30), min_size=1, max_size=4), logs=st.lists(st.floats(-15, 15), min_size=4,
                                                                                     max_size=4),
       ms=st.lists(st.floats(-10, 10), min_size=4, max_size=4), as_numbers=st.booleans())
def test_weighted_products_and_their_derivatives_are_the_closed_forms(logw, logs, ms, as_numbers) -> None:
    """Weights from 1e-30 to 1e30 and scales from 1e-15 to 1e15 in float32 (every precision, 1e-60 to 1e60, is a
    float64 number): the location and scale to float32's rounding, measured against the locations' spread (a mean of
    values of opposite signs loses their digits, in any formula), and the derivatives to 1e-4."""
    ws = [10.0 ** x for x in logw]
    ss = [10.0 ** x for x in logs[:len(ws)]]
    ms = ms[:len(ws)]
    s = [torch.tensor([ss[i]], requires_grad=True) for i in range(len(ws))]
    m = [torch.tensor([ms[i]], requires_grad=True) for i in range(len(ws))]
    ws32 = [float(torch.tensor(w)) for w in ws]  # (the weights as float32 holds them)
    ss = [float(x.detach()) for x in s]
    ms = [float(x.detach()) for x in m]
    terms = [(w if as_numbers else torch.tensor(w), s[i], m[i], False) for i, w in enumerate(ws32)]
    loc, scale = _combine(terms)
    want_loc, want_scale, t, total = _float64_product(ws32, ss, ms)
    spread = math.fsum(ti * abs(mi) for ti, mi in zip(t, ms)) / total
    assert abs(loc.item() - want_loc) <= 4e-6 * spread + 1e-30
    assert abs(scale.item() - want_scale) <= 4e-6 * want_scale
    grads = torch.autograd.grad(loc.sum() + scale.sum() / want_scale, [*m, *s])
    for i, (w, si, mi) in enumerate(zip(ws32, ss, ms)):
        d_m = t[i] / total  # d loc / d m_i
        assert abs(float(grads[i]) - d_m) <= 1e-4 * max(d_m, 1e-30) + 1e-6
        d_t = -2 * t[i] / si  # d T_i / d s_i
        d_loc = d_t * (mi - want_loc) / total
        d_scale = -0.5 * total ** -1.5 * d_t / want_scale
        want = d_loc + d_scale
        bound = abs(d_t) / total * (spread + abs(mi) + 1.0)
        assert abs(float(grads[len(ws) + i]) - want) <= 1e-4 * bound + 1e-30, (i, float(grads[len(ws) + i]), want)


@pytest.mark.parametrize("shapes", [[(4, 2)] * 3, [(1, 2), (4, 2), (4, 2)], [(2,), (4, 2), (1, 1)]])
def test_a_weight_given_as_a_number_gives_the_same_product_as_the_same_weight_as_a_tensor(shapes) -> None:
    # (numbers take the stacked path, tensors the term-by-term one: the same formula, and the same shapes: each
    # scale's and each location's own, broadcast)
    torch.manual_seed(0)
    scales = [torch.rand(sh) + 0.05 for sh in shapes]
    locs = [torch.randn(4, 2) for _ in shapes]
    for ws in ([1.0, 1.0, 1.0], [0.5, 2.0, 1.0], [0.0, 3.0, 1e-3], [1e-30, 1.0, 1e30]):
        by_number = _combine([(w, scales[i], locs[i], False) for i, w in enumerate(ws)])
        by_tensor = _combine([(torch.tensor(w), scales[i], locs[i], False) for i, w in enumerate(ws)])
        for a, b in zip(by_number, by_tensor):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=4e-7, atol=0)
        exact = _float64_product  # (and the closed form, element by element, in float64)
        for idx in itertools.product(range(4), range(2)):
            sc = [float(x.expand(4, 2)[idx]) for x in scales]
            want_loc, want_scale, _, _ = exact([float(torch.tensor(w)) for w in ws], sc, [float(x[idx]) for x in locs])
            assert by_number[0][idx].item() == pytest.approx(want_loc, rel=1e-5, abs=1e-6)
            assert by_number[1].expand(4, 2)[idx].item() == pytest.approx(want_scale, rel=1e-5)


def test_an_expert_of_weight_0_gets_a_gradient_of_0_as_under_pixyz() -> None:
    # (Pixyz multiplies its precision by 0: the expert's network gets a zero gradient, not none, which matters to
    # an optimizer with momentum)
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal, ProductOfNormal

        torch.manual_seed(0)

        class E(Normal):
            def __init__(self, v: str) -> None:
                super().__init__(var=["z"], cond_var=[v], name="q_" + v)
                self.fc = nn.Linear(2, 4)

            def forward(self, **x: Any) -> Any:
                loc, s = self.fc(next(iter(x.values()))).chunk(2, -1)
                return {"loc": loc, "scale": nn.functional.softplus(s)}

        a, b = E("x"), E("y")
        p = ProductOfNormal([a, b], weight_modalities=[1.0, 0.0, 2.0])
        params = p.get_params({"x": torch.randn(3, 2), "y": torch.randn(3, 2)})
        (params["loc"].sum() + params["scale"].sum()).backward()
        return [None if q.grad is None else q.grad.abs().sum() for q in a.parameters()], params["loc"]

    ref, ours = run_both(program)
    assert all(g is not None and float(g) == 0.0 for g in ref[0])
    assert all(g is not None and float(g) == 0.0 for g in ours[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_a_changed_weight_buffer_is_read_again() -> None:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    a = Normal(loc="xa", scale=torch.tensor([1.0]), var=["z"], cond_var=["xa"], name="a")
    b = Normal(loc="xb", scale=torch.tensor([1.0]), var=["z"], cond_var=["xb"], name="b")
    p = ProductOfNormal([a, b], weight_modalities=[1.0, 1.0, 1.0])
    x = {"xa": torch.tensor([[3.0]]), "xb": torch.tensor([[6.0]])}
    assert float(p.get_params(x)["loc"]) == pytest.approx(3.0)  # (0 + 3 + 6) / 3
    p.weight_modalities[2] = 4.0  # in place
    assert float(p.get_params(x)["loc"]) == pytest.approx(27.0 / 6.0)
    p.weight_modalities = torch.tensor([1.0, 0.0, 1.0])  # a new buffer
    assert float(p.get_params(x)["loc"]) == pytest.approx(3.0)
    p.double()
    assert p.get_params({k: v.double() for k, v in x.items()})["loc"].dtype == torch.float64


def _two_experts() -> Any:
    from pyro_dgm.distributions import Normal, ProductOfNormal

    a = Normal(loc="xa", scale=torch.tensor([1.0]), var=["z"], cond_var=["xa"], name="a")
    b = Normal(loc="xb", scale=torch.tensor([0.5]), var=["z"], cond_var=["xb"], name="b")
    p = ProductOfNormal([a, b], weight_modalities=[1.0, 1.0, 1.0])
    return p, {"xa": torch.tensor([[3.0]]), "xb": torch.tensor([[1.0]])}


def _loc(w0: float, wa: float, wb: float) -> float:
    """The closed form for :func:`_two_experts`: precisions w0, wa, 4 wb; locations 0, 3, 1."""
    return (3.0 * wa + 4.0 * wb) / (w0 + wa + 4.0 * wb)


def test_weights_that_take_gradients_or_come_through_torch_func_are_tensors_with_their_derivatives() -> None:
    # (probe p268: weights read as numbers lost their gradient, an nn.Parameter put in the buffer's place or weights
    # given by functional_call, and vmap over them failed with torch's "Cannot access data pointer")
    from torch import nn
    from torch.func import functional_call, grad, vmap

    p, x = _two_experts()
    want = torch.tensor([(0 - _loc(1, 2, 1)) / 7, (3 - _loc(1, 2, 1)) / 7, 4 * (1 - _loc(1, 2, 1)) / 7])  # d loc / d w
    p.weight_modalities = nn.Parameter(torch.tensor([1.0, 2.0, 1.0]))
    loc = p.get_params(x)["loc"]
    assert loc.item() == pytest.approx(_loc(1, 2, 1))
    torch.testing.assert_close(torch.autograd.grad(loc.sum(), p.weight_modalities)[0], want)

    p, x = _two_experts()

    def loc_of(w: torch.Tensor) -> torch.Tensor:  # (a distribution's call gives its parameters, as Pixyz's forward)
        return functional_call(p, {"weight_modalities": w}, (), x)["loc"].sum()

    torch.testing.assert_close(grad(loc_of)(torch.tensor([1.0, 2.0, 1.0])), want)
    ws = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0]])
    torch.testing.assert_close(vmap(loc_of)(ws), torch.tensor([_loc(1, 1, 1), _loc(1, 5, 1)]))
    assert p.get_params(x)["loc"].item() == pytest.approx(_loc(1, 1, 1))  # (its own weights again)


def test_weights_changed_in_place_or_given_another_storage_are_read_again() -> None:
    p, x = _two_experts()
    assert p.get_params(x)["loc"].item() == pytest.approx(_loc(1, 1, 1))
    p.weight_modalities.data = torch.tensor([1.0, 5.0, 1.0])  # (another storage, the same tensor object)
    assert p.get_params(x)["loc"].item() == pytest.approx(_loc(1, 5, 1))
    p.weight_modalities.fill_(1.0)
    assert p.get_params(x)["loc"].item() == pytest.approx(_loc(1, 1, 1))
    p.load_state_dict({**p.state_dict(), "weight_modalities": torch.tensor([2.0, 1.0, 3.0])})
    assert p.get_params(x)["loc"].item() == pytest.approx(_loc(2, 1, 3))


def _same_steps(ref: Any, ours: Any) -> None:
    """Pixyz's ``(losses of each step, parameters at the end)`` (``ref``) and pyro_dgm's are the same."""
    assert len(ours[0]) == len(ref[0]) and len(ours[1]) == len(ref[1])
    for a, b in zip(ref[0], ours[0]):
        torch.testing.assert_close(torch.as_tensor(b), torch.as_tensor(a))
    for a, b in zip(ref[1], ours[1]):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("change", ["insert", "addparam"])
def test_a_gradient_norm_clips_the_parameters_as_they_are_at_each_step_as_under_pixyz(change: str) -> None:
    """Probe p269: ``clip_grad_norm`` clipped the parameters listed when the model was built or last changed: a
    layer inserted into an ``nn.Sequential`` or a parameter added afterwards was left out of the norm, and the other
    weights were scaled otherwise than by Pixyz, which clips ``distributions.parameters()`` at each step."""
    def program() -> Any:
        import torch
        from torch import nn, optim

        from pixyz.distributions import Categorical
        from pixyz.models import ML

        torch.manual_seed(0)

        class C(Categorical):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="c")
                self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"probs": torch.softmax(self.net(x) + getattr(self, "b2", 0), -1)}

        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 4, generator=g)
        y = nn.functional.one_hot(torch.randint(0, 3, (16,), generator=g), 3).float()
        c = C()
        m = ML(c, optimizer=optim.SGD, optimizer_params={"lr": 0.5}, clip_grad_norm=0.1)
        m.train({"x": x.clone(), "y": y.clone()})
        torch.manual_seed(1)
        if change == "insert":
            c.net.insert(2, nn.Linear(8, 8))
        else:
            c.b2 = nn.Parameter(torch.randn(3) * 3)
        kept = []  # (each batch a new tensor kept alive: Pixyz's cache, keyed by id, would answer a reused id)
        losses = []
        for _ in range(3):
            kept.append({"x": x.clone(), "y": y.clone()})
            losses.append(m.train(kept[-1]))
        return losses, [p.detach().clone() for p in c.net[0].parameters()]

    ref, ours = run_both(program)
    _same_steps(ref, ours)


def _changing_network(change: str) -> Any:
    """ML with ``clip_grad_norm`` on a network that changes during training (probe p270), as a Pixyz program."""
    import torch
    from torch import nn, optim

    from pixyz.distributions import Normal
    from pixyz.models import ML

    torch.manual_seed(0)

    class C(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="c")
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
            self.n = 0

        def forward(self, x):  # type: ignore[no-untyped-def]
            h = self.net(x)
            if change == "made by forward" and self.n == 0:  # (a lazily built offset)
                self.off = nn.Parameter(torch.full((2,), 0.5))
                self.n += 1
            return {"loc": h + getattr(self, "off", 0), "scale": torch.ones(2)}

    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    y = torch.randn(16, 2, generator=g) * 3
    c = C()
    spare = nn.Linear(8, 8)
    m = ML(c, optimizer=optim.SGD, optimizer_params={"lr": 0.3}, clip_grad_norm=0.05)
    kept, losses = [], []
    for step in range(6):
        if step == 2 and change == "put back":  # (pop then insert: the container's size is the same, and insert
            c.net.pop(2)  # registers nothing)
            c.net.insert(2, spare)
        if step == 2 and change == "by hand":
            c.net[0]._parameters["weight"] = nn.Parameter(torch.randn(8, 4))
        kept.append({"x": x.clone(), "y": y.clone()})  # (kept alive: Pixyz's cache is keyed by the tensors' ids)
        losses.append(m.train(kept[-1]))
    return losses, [p.detach().clone() for p in c.net[4].parameters()]


@pytest.mark.parametrize("change", ["made by forward", "put back", "by hand"])
def test_parameters_that_the_registration_counter_misses_are_clipped_as_under_pixyz(change: str) -> None:
    ref, ours = run_both(lambda: _changing_network(change))
    _same_steps(ref, ours)


def test_a_network_built_elsewhere_at_each_step_does_not_make_the_model_list_its_parameters_again(monkeypatch) -> None:
    # (probe p270: torch's parameter registration hook counted every parameter made anywhere, and each step walked
    # the model's modules again: 2.7 times Pixyz's step for a network of 2,000 modules)
    from torch import nn, optim

    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import ML, Model

    class C(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="c")
            self.net = nn.Linear(4, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"loc": self.net(x), "scale": torch.ones(2)}

    c = C()
    m = ML(c, optimizer=optim.SGD, optimizer_params={"lr": 0.1})
    data = {"x": torch.randn(8, 4), "y": torch.randn(8, 2)}
    m.train(data)
    calls = []
    follow = Model._dgm_follow_changes
    monkeypatch.setattr(Model, "_dgm_follow_changes", lambda self: (calls.append(1), follow(self))[1])
    for _ in range(3):
        nn.Linear(3, 3)  # (built elsewhere, not trained here)
        m.train(data)
    assert not calls
    c.extra = nn.Parameter(torch.zeros(2))  # (on a trained network: seen)
    m.train(data)
    assert calls and any(p is c.extra for p in m._dgm_params)


def test_a_product_on_the_meta_device_gives_its_parameters_shapes() -> None:
    # (weights read as numbers: a meta tensor has none, "Cannot copy out of meta tensor"; the session's start gave
    # the shapes, as torch's modules do on the meta device)
    from torch import nn

    from pyro_dgm.distributions import Normal, ProductOfNormal

    class E(Normal):
        def __init__(self, v: str) -> None:
            super().__init__(var=["z"], cond_var=[v], name="q" + v)
            self.fc = nn.Linear(3, 4)

        def forward(self, **x: Any) -> Any:
            loc, s = self.fc(next(iter(x.values()))).chunk(2, -1)
            return {"loc": loc, "scale": nn.functional.softplus(s)}

    with torch.device("meta"):
        q = ProductOfNormal([E("x"), E("y")], weight_modalities=[1.0, 0.5, 2.0])
        params = q.get_params({"x": torch.randn(5, 3), "y": torch.randn(5, 3)})
    assert params["loc"].is_meta and params["loc"].shape == params["scale"].shape == (5, 2)


def _gan_parts(hidden: int = 8) -> Any:
    """A generator ``p(x) = int p(x|z) p(z) dz`` and the class of a discriminator ``d(t|x)``, as a Pixyz program
    writes them (imported from ``pixyz`` when called: pyro_dgm's inside the harness's programs)."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic, Normal

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(3, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"x": self.net(z)}

    class Dc(Deterministic):
        def __init__(self, cond: str = "x") -> None:
            super().__init__(var=["t"], cond_var=[cond], name="d")
            self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Sigmoid())

        def forward(self, **x: Any) -> Any:
            return {"t": self.net(next(iter(x.values())))}

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[3], name="p_{prior}")
    return (G() * prior).marginalize_var("z"), Dc


@pytest.mark.parametrize("how", ["setattr", "add_module"])
def test_a_discriminator_put_in_place_between_steps_is_the_one_used_and_trained_as_under_pixyz(how: str) -> None:
    """Probes p271, p272: ``loss.d = d2`` (or ``add_module("d", d2)``), with its own ``d_optimizer``, between GAN
    steps: the term kept evaluating and training the discriminator it was built with (Pixyz's reads ``self.d`` at
    each evaluation and step)."""
    def program() -> Any:
        import torch
        from torch import optim

        from pixyz.models import GAN

        torch.manual_seed(0)
        generator, Dc = _gan_parts()
        m = GAN(generator, Dc(), optimizer=optim.SGD, optimizer_params={"lr": 0.1},
                d_optimizer=optim.SGD, d_optimizer_params={"lr": 0.1})
        d2 = Dc()
        gen = torch.Generator().manual_seed(1)
        kept, out = [], []
        for step in range(4):
            if step == 2:
                if how == "setattr":
                    m.loss_cls.d = d2
                else:
                    m.loss_cls.add_module("d", d2)
                m.loss_cls.d_optimizer = optim.SGD(d2.parameters(), lr=0.1)
            kept.append({"x": torch.randn(16, 2, generator=gen) + 2})
            out.append(m.train(kept[-1]))
        return out, [p.detach().clone() for p in d2.parameters()]

    ref, ours = run_both(program)
    for a, b in zip(ref[0], ours[0]):
        torch.testing.assert_close(torch.as_tensor(b[0]), torch.as_tensor(a[0]))
        torch.testing.assert_close(torch.as_tensor(b[1]), torch.as_tensor(a[1]))
    for a, b in zip(ref[1], ours[1]):
        torch.testing.assert_close(b, a)


def test_a_deleted_parameter_leaves_the_clipped_norm_as_under_pixyz() -> None:
    """Probe p271: a parameter outside the optimizer (its gradient never cleared) deleted when it came last in
    ``parameters()``: its old gradient stayed in the clipped norm."""
    def program() -> Any:
        import torch
        from torch import nn, optim

        from pixyz.distributions import Normal
        from pixyz.models import ML

        torch.manual_seed(0)

        class C(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="c")
                self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"loc": self.net(x) + getattr(self.net[2], "b", 0), "scale": torch.ones(2)}

        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g) * 3
        c = C()
        m = ML(c, optimizer=optim.SGD, optimizer_params={"lr": 0.3}, clip_grad_norm=1.0)
        kept, losses = [], []
        for step in range(7):
            if step == 2:
                c.net[2].b = nn.Parameter(torch.full((2,), 0.5))  # (not in the optimizer)
            if step == 5:
                del c.net[2].b
            kept.append({"x": x.clone(), "y": y.clone()})
            losses.append(m.train(kept[-1]))
        return losses, [p.detach().clone() for p in c.net[0].parameters()]

    ref, ours = run_both(program)
    _same_steps(ref, ours)


def test_a_discriminator_without_parameters_put_in_place_is_taken_as_under_pixyz() -> None:
    """Probe p272: a fixed critic (no parameters) assigned to a term was refused, where Pixyz's term takes it and
    evaluates with it."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Deterministic, EmpiricalDistribution
        from pixyz.losses import AdversarialJensenShannon

        torch.manual_seed(0)

        class Fixed(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d_0")

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"t": torch.sigmoid(x.sum(-1, keepdim=True))}

        generator, Dc = _gan_parts(4)
        term = AdversarialJensenShannon(EmpiricalDistribution(["x"]), generator, Dc())
        x = torch.randn(8, 2) + 2
        before = term.eval({"x": x})
        term.d = Fixed()
        return before, term.eval({"x": x}), type(term.d).__name__

    ref, ours = run_both(program)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    assert ours[2] == ref[2] == "Fixed"


def test_a_refused_discriminator_leaves_the_term_as_it_was() -> None:
    # (probe p272: the refusal came after the assignment, so loss.d was the refused one while the term used the old)
    def program() -> Any:
        import torch

        from pixyz.distributions import EmpiricalDistribution
        from pixyz.losses import AdversarialJensenShannon

        torch.manual_seed(0)
        generator, Dc = _gan_parts(4)
        d = Dc()
        term = AdversarialJensenShannon(EmpiricalDistribution(["x"]), generator, d)
        x = {"x": torch.randn(8, 2) + 2}
        torch.manual_seed(1)
        before = term.eval(x)
        with pytest.raises(ValueError, match=r"the discriminator .* is conditioned on \['y'\], but the compared "
                                             r"variables are \['x'\]"):
            term.d = Dc("y")
        assert term.d is d and term.discriminator is d
        torch.manual_seed(1)
        torch.testing.assert_close(term.eval(x), before)

    run_pyro_dgm(program)
