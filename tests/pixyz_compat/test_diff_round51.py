"""Fifty-first round: a term after a nested reuse of a ``Deterministic`` reads its own use's pass (probe p359), a
``get_params`` override that changes its parent's dict in place, and values whose batch dim lines up with a size-1
feature dim (probe p360), under Pixyz and here (:mod:`pixyz_harness`)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm


def _nested_program(kind: str, draws: bool = True) -> Callable[[], Any]:
    """A ``Deterministic`` ``h(h|x)`` used by an outer and an inner ``Expectation``, and ``q(z|h)`` after it with a
    dropout (and a batch norm): Pixyz runs ``h`` at each use, so the inner use hands ``q`` a new tensor and ``q``
    runs again, while a term of the outer use after the inner one reads the outer pass from Pixyz's cache. With
    ``draws=False`` ``q`` is pure (no dropout, no batch norm): every use may share its pass."""
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Entropy, Expectation, IterativeLoss, KullbackLeibler

        calls = []

        class H(Deterministic):
            memoizable = True  # opts in to sharing one pass between uses (what this test is about)

            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"h": self.fc(x)}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc = nn.Linear(3, 2)
                self.drop = nn.Dropout(0.5) if draws else nn.Identity()
                self.bn = nn.BatchNorm1d(2) if draws and kind != "plain" else nn.Identity()

            def forward(self, h: torch.Tensor) -> dict:
                calls.append(1)
                o = self.drop(self.bn(self.fc(h)))
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q = H(), Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        step = Expectation(h, KullbackLeibler(q, prior) + Expectation(h, KullbackLeibler(q, prior)) + Entropy(q))
        if kind == "iterative":
            loss = IterativeLoss(step, max_iter=2, series_var=["x"]).mean()
            x = torch.randn(2, 8, 3)
        else:
            loss = step.mean()
            x = torch.randn(8, 3)
        v = loss.eval({"x": x})
        grads = torch.autograd.grad(v, list(q.fc.parameters()))
        running = q.bn.running_mean.clone() if isinstance(q.bn, nn.BatchNorm1d) else torch.zeros(2)
        return v.detach(), [g for g in grads], running, len(calls), torch.rand(2)
    return program


@pytest.mark.parametrize("kind", ["plain", "batch_norm", "iterative"])
def test_a_term_after_a_nested_reuse_of_a_deterministic_reads_its_own_uses_pass(kind: str) -> None:
    """Probe p359: in ``E_h[KL(q|h) + E_h[KL(q|h)] + H(q|h)]`` with a dropout in ``q``, the inner use of ``h`` ran
    ``q`` again (as Pixyz does) but its pass replaced the outer one in the cache, so the outer entropy read the
    inner use's mask: the loss 3.7296 where Pixyz (and hand-written torch with the first mask) gives 3.7913, and in
    an ``IterativeLoss`` other gradients of ``q``. A reuse of a ``Deterministic`` now hands on aliases of its
    tensors (new objects, as Pixyz's new run), so each use's passes are its own: the value, ``q``'s gradients, its
    batch norm's statistics, its pass count and the random stream after them are Pixyz's."""
    ref, ours = run_both(_nested_program(kind))
    assert_same(ref, ours)


def test_a_term_after_a_nested_reuse_reads_the_first_mask_as_hand_written_torch() -> None:
    """The same loss written with torch alone, from the same seed: the outer entropy is the first pass's (the first
    dropout mask), the inner KL the second's; the library's value is that one, not the one with the second mask."""
    def hand() -> Any:
        import torch
        import torch.distributions as D
        from torch import nn
        from torch.nn import functional as F

        fc_h, fc_q, drop = nn.Linear(3, 3), nn.Linear(3, 2), nn.Dropout(0.5)
        x = torch.randn(8, 3)
        h = fc_h(x)

        def q() -> Any:
            o = drop(fc_q(h))
            return D.Normal(o, F.softplus(o) + 0.5)
        prior = D.Normal(torch.zeros(2), torch.ones(2))
        q1, q2 = q(), q()
        kl = D.kl_divergence(q1, prior).sum(-1) + D.kl_divergence(q2, prior).sum(-1)
        return (kl + q1.entropy().sum(-1)).mean(), (kl + q2.entropy().sum(-1)).mean()
    first, second = run_pyro_dgm(hand)
    ours = run_pyro_dgm(_nested_program("plain"))
    assert not torch.allclose(first, second)  # (the two masks give two values: the test tells them apart)
    torch.testing.assert_close(ours[0], first.detach())


def test_a_pure_network_after_a_reused_deterministic_still_runs_once() -> None:
    """The aliases do not make a pure network run again: ``q`` without dropout or batch norm runs once for the
    two uses of ``h`` (Pixyz runs it once per use, with the same values), and the value and gradients are
    Pixyz's."""
    ref, ours = run_both(_nested_program("plain", draws=False))
    assert ref[3] == 2 and ours[3] == 1
    assert_same(ref[:3], ours[:3])


def test_a_get_params_override_changing_the_dict_in_place_gives_its_formula_at_every_call() -> None:
    """Probe p359: an override that changes the dict its parent's ``get_params`` returned (``out["loc"] =
    out["loc"] * 2``) changes Pixyz's cached dict, so its second call with the same inputs gives ``loc * 4``. Each
    call here gets its own dict (the network still runs once per call): ``loc * 2`` every time, the override's
    formula, computed here from the network's weights by hand (``porting.md``)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(3, 2)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.lin(x)}

            def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:
                out = super().get_params(params_dict, **kwargs)
                out["scale"] = torch.nn.functional.softplus(out["loc"]) + 0.1
                out["loc"] = out["loc"] * 2
                return out

        q = Q()
        x = torch.randn(2, 3)
        first = q.get_params({"x": x})["loc"].detach().clone()
        second = q.get_params({"x": x})["loc"].detach().clone()
        return first, second, (q.lin(x) * 2).detach()
    ref = run_pixyz(program)
    ours = run_pyro_dgm(program)
    torch.testing.assert_close(ours[0], ours[2])
    torch.testing.assert_close(ours[1], ours[2])
    torch.testing.assert_close(ref[0], ref[2])  # (Pixyz's first call is the formula; its second is not)
    torch.testing.assert_close(ref[1], ref[2] * 2)


def _transposed_program() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Bernoulli, Normal

    class P(Bernoulli):  # a decoder of probabilities of shape (B, 1, 8, 8)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(4, 64)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z)).view(-1, 1, 8, 8)}

    class Q(Normal):  # an encoder of a one-dim latent: parameters of shape (B, 1)
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :1], "scale": h[:, 1:].exp()}

    p, q = P(), Q()
    z, imgs = torch.randn(5, 4), (torch.rand(5, 8, 8) > 0.5).float()
    xs, zs = torch.randn(5, 3), torch.randn(5, 1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        images = p.get_log_prob({"z": z, "x": imgs.unsqueeze(0)})  # (1, 5, 8, 8): unsqueeze(1) meant
        latent = q.get_log_prob({"x": xs, "z": zs.T})  # (1, 5)
    rows = torch.stack([p.get_log_prob({"z": z, "x": imgs[j].expand(5, 1, 8, 8)}) for j in range(5)]).sum(0)
    return images, latent, rows, [str(w.message) for w in seen]


def test_a_value_whose_batch_lines_up_with_a_size_one_feature_dim_warns_and_scores_as_pixyz() -> None:
    """Probe p360: ``x.unsqueeze(0)``, shape ``(1, B, 8, 8)``, under Bernoulli parameters of ``(B, 1, 8, 8)`` (and
    ``z.T`` under a one-dim latent) is scored by both libraries against every batch row: each of the B scores sums
    all B images (checked here against the sum of each image scored under every row). The shapes also fit a valid
    program with B features, so the number stays Pixyz's; a warning names the variable and the dims."""
    ref, ours = run_both(_transposed_program)
    assert_same(ref[:3], ours[:3])
    torch.testing.assert_close(ours[0], ours[2])
    assert not ref[3]
    assert len(ours[3]) == 2
    assert "'x' has shape (1, 5, 8, 8)" in ours[3][0] and "move it to dim 0" in ours[3][0]
    assert "'z' has shape (1, 5)" in ours[3][1] and "P p(x|z)" in ours[3][0] and "Q q(z|x)" in ours[3][1]


def test_strict_shapes_refuses_a_value_whose_batch_lines_up_with_a_size_one_feature_dim() -> None:
    """Under ``strict_shapes()`` (opt-in) the same values are refused, naming the distribution, the variable and
    the expected shape; the right layouts pass and give the scores of each row."""
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import ShapeError, strict_shapes

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :1], "scale": h[:, 1:].exp()}

    q, x, z = Q(), torch.randn(5, 3), torch.randn(5, 1)
    with strict_shapes():
        right = q.get_log_prob({"x": x, "z": z})
        with pytest.raises(ShapeError, match=r"Q q\(z\|x\): the value of 'z' has shape \(1, 5\).*should have shape "
                                             r"\(5, 1\).*lines up with a feature dim of size 1"):
            q.get_log_prob({"x": x, "z": z.T})
    h = q.fc(x)
    expected = torch.distributions.Normal(h[:, :1], h[:, 1:].exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(right, expected)


def test_feature_dims_leave_the_dims_outside_them_unsummed_as_under_pixyz() -> None:
    """Probe p364: ``log q(z_i|x_j)`` of every pair (``z`` of shape ``(B, 1, Z)`` under parameters of
    ``(1, B, Z)``, the minibatch-weighted estimates of beta-TCVAE) summed over the latent dim only
    (``feature_dims=[-1]`` or ``[2]``) was refused as a feature broadcast, though only the dim that is not summed
    broadcasts (``sum_features=False`` passed). Now each gives Pixyz's matrix, which is the pairs' hand-computed
    log-densities."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        q = Normal(loc="m", scale="s", var=["z"], cond_var=["m", "s"])
        m, s, z = torch.randn(1, 4, 3), torch.rand(1, 4, 3) + .5, torch.randn(4, 1, 3)
        hand = torch.distributions.Normal(m, s).log_prob(z).sum(-1)
        return hand, [q.get_log_prob({"z": z, "m": m, "s": s}, feature_dims=d) for d in ([-1], [2])]
    ref, ours = run_both(program)
    assert_same(ref, ours)
    for got in ours[1]:
        torch.testing.assert_close(got, ours[0])


def _draws_program(shape: list[int]) -> Callable[[], Any]:
    """``p(x|z)`` scoring data ``x`` of ``(B, D)`` under ``z`` drawn from ``q(z|x)`` with ``sample_shape``, and the
    hand-computed sum of every dim after the first (Pixyz's)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Bernoulli, Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.f = nn.Linear(3, 2)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.f(x), "scale": torch.ones(x.shape[:-1] + (2,))}

        class P(Bernoulli):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.f = nn.Linear(2, 3)

            def forward(self, z: torch.Tensor) -> dict:
                return {"probs": torch.sigmoid(self.f(z))}

        q, p = Q(), P()
        x = torch.bernoulli(torch.full((4, 3), .5))
        z = q.sample({"x": x}, sample_shape=shape)["z"]
        hand = torch.distributions.Bernoulli(probs=torch.sigmoid(p.f(z))).log_prob(x).flatten(1).sum(1)
        flat = z.flatten(0, len(shape) - 1)  # (one sample dim: the draws' sums, each under its draw)
        flat_hand = torch.distributions.Bernoulli(probs=torch.sigmoid(p.f(flat))).log_prob(x).flatten(1).sum(1)
        return p.get_log_prob({"z": flat, "x": x}), flat_hand.detach(), p.get_log_prob({"z": z, "x": x}), hand
    return program


def test_data_scored_under_draws_of_a_sample_shape_as_pixyz_or_refused_with_the_way_out() -> None:
    """Probe p364: data ``x`` of ``(B, D)`` under ``z`` drawn with ``sample_shape=[2]`` is scored as Pixyz scores it
    (each draw's sum, hand-computed). With ``sample_shape=[3, 2]`` (read with one batch dim: features
    ``(2, B, D)``) the value lacks a leading feature dim, which the shapes cannot tell from an image of one channel
    under three (probe p367: each pixel would be scored three times), so it is refused as before (Pixyz scores it:
    ``porting.md``), and the message says to give ``z`` one sample dim (``z.flatten(0, 1)``, scored first in the
    program: each draw's sum, hand-computed, in both libraries)."""
    ref, ours = run_both(_draws_program([2]))
    assert_same(ref, ours)
    torch.testing.assert_close(ours[0].detach(), ours[1])
    torch.testing.assert_close(ours[2].detach(), ours[3].detach())
    from pyro_dgm.utils.checks import ShapeError
    with pytest.raises(ShapeError, match=r"P p\(x\|z\): the value of 'x' has shape \(4, 3\).*no dim for the "
                                         r"distribution's feature dim 1 of size 2.*z.flatten\(0, 1\)"):
        run_pyro_dgm(_draws_program([3, 2]))
    ref = run_pixyz(_draws_program([3, 2]))
    torch.testing.assert_close(ref[2].detach(), ref[3].detach())


def test_a_value_lacking_a_real_leading_feature_dim_is_refused() -> None:
    """Probe p367: an image of one channel, ``(H, W)`` or ``(1, H, W)``, under a distribution of three channels
    (``features_shape=[3, H, W]``): Pixyz scores each pixel three times (the hand-computed sum over the broadcast
    channels), here it is refused, naming the variable and the missing dim."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import ShapeError

    loc = torch.randn(4, 3, 2, 5)
    p = Normal(loc="m", scale=torch.tensor(1.), var=["x"], cond_var=["m"], features_shape=[3, 2, 5])
    for value in (torch.randn(2, 5), torch.randn(1, 2, 5)):
        with pytest.raises(ShapeError, match=r"the value of 'x' has shape \((1, )?2, 5\)"):
            p.get_log_prob({"m": loc, "x": value})


def test_a_deterministic_returning_a_named_tuple_hands_each_use_its_own_tensors() -> None:
    """Probe p363: with ``h`` returning a named tuple (an RNN state's kind), the reuse handed ``q`` the first use's
    tensors (only plain containers were copied), so the inner use of the nested loss shared the outer use's dropout
    mask: loss 3.6234, ``q`` run once, where Pixyz gives 4.5238 and runs it twice. The named tuple's tensors are
    copied now: the value, the gradient, the pass count and the random stream after are Pixyz's."""
    def program() -> Any:
        import collections

        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Entropy, Expectation, KullbackLeibler

        State = collections.namedtuple("State", "a b")
        calls = []

        class H(Deterministic):
            memoizable = True  # opts in to sharing one pass between uses (what this test is about)

            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                a = self.fc(x)
                return {"h": State(a, torch.tanh(a))}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc, self.drop = nn.Linear(3, 2), nn.Dropout(0.5)

            def forward(self, h: Any) -> dict:
                calls.append(1)
                o = self.drop(self.fc(h.a + h.b))
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q = H(), Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = Expectation(h, KullbackLeibler(q, prior) + Expectation(h, KullbackLeibler(q, prior))
                           + Entropy(q)).mean()
        v = loss.eval({"x": torch.randn(8, 3)})
        return v.detach(), torch.autograd.grad(v, q.fc.weight)[0], len(calls), torch.rand(2)
    ref, ours = run_both(program)
    assert_same(ref, ours)


def _two_uses_program(kind: str) -> Callable[[], Any]:
    """``E_h[KL(q1|h)] + E_h[KL(q2|h)]`` where ``q2`` changes its copy of ``h`` in place (an in-place ReLU, or
    ``detach_`` before a dropout), or ``h`` is sparse: Pixyz's second run of ``h`` gives each term tensors of its
    own."""
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, KullbackLeibler

        class H(Deterministic):
            memoizable = True  # opts in to sharing one pass between uses (what this test is about)

            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                h = F.relu(self.fc(x)) if kind != "relu" else self.fc(x)
                return {"h": h.to_sparse() if kind == "sparse" else h}

        class Q(Normal):
            def __init__(self, second: bool, name: str) -> None:
                super().__init__(var=["z"], cond_var=["h"], name=name)
                self.w = nn.Parameter(torch.randn(3, 2))
                self.second = second

            def forward(self, h: torch.Tensor) -> dict:
                if kind == "sparse":
                    o = torch.sparse.mm(h, self.w)
                elif kind == "relu" and self.second:
                    o = F.relu(h, inplace=True) @ self.w
                elif kind == "detach" and self.second:
                    h.detach_()
                    o = F.dropout(h @ self.w, 0.3)
                else:
                    o = h @ self.w
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q1, q2 = H(), Q(False, "q1"), Q(True, "q2")
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = (Expectation(h, KullbackLeibler(q1, prior)) + Expectation(h, KullbackLeibler(q2, prior))).mean()
        v = loss.eval({"x": torch.randn(4, 3)})
        return v.detach(), list(torch.autograd.grad(v, [h.fc.weight, q1.w, q2.w], allow_unused=True))
    return program


@pytest.mark.parametrize("kind", ["relu", "detach", "sparse"])
def test_a_later_uses_in_place_change_or_a_sparse_output_of_a_reused_deterministic_as_under_pixyz(
        kind: str) -> None:
    """Probe p363: the second use's in-place ReLU changed the tensor the first term's graph had saved (backward
    raised "modified by an inplace operation", at the session's start too), ``detach_`` of a view raised, and a
    sparse output could not be viewed. Each use gets a copy now: the loss and the gradients are Pixyz's (the
    unused gradients, ``None``, alike)."""
    ref, ours = run_both(_two_uses_program(kind))
    assert_same(ref, ours)


def _held_program(kind: str) -> Callable[[], Any]:
    """``h``'s output in a container a copy cannot be made of (a user's object, a tuple subclass with its own
    ``__new__``, tuples nested nine deep), or with a gradient hook (per-use gradient clipping), read by two uses
    with ``q`` (dropout) after it."""
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Entropy, Expectation, KullbackLeibler

        class Obj:
            def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
                self.a, self.b = a, b

        class Pair(tuple):
            def __new__(cls, a: torch.Tensor, b: torch.Tensor) -> "Pair":
                return super().__new__(cls, (a, b))

        hooks, calls = [], []

        def wrap(a: torch.Tensor) -> Any:
            if kind == "object":
                return Obj(a, torch.tanh(a))
            if kind == "tuple_subclass":
                return Pair(a, torch.tanh(a))
            if kind == "deep":
                out: Any = a
                for _ in range(9):
                    out = (out,)
                return out
            if a.requires_grad:
                a.register_hook(lambda g: (hooks.append(1), g.clamp(-0.01, 0.01))[1])
            return a

        def unwrap(h: Any) -> torch.Tensor:
            if kind in ("object",):
                return h.a + h.b
            if kind == "tuple_subclass":
                return h[0] + h[1]
            if kind == "deep":
                for _ in range(9):
                    h = h[0]
            return h

        class H(Deterministic):
            memoizable = True  # opts in to sharing one pass between uses (what this test is about)

            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"h": wrap(self.fc(x))}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc, self.drop = nn.Linear(3, 2), nn.Dropout(0.5)

            def forward(self, h: Any) -> dict:
                calls.append(1)
                o = self.drop(self.fc(unwrap(h)))
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q = H(), Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = Expectation(h, KullbackLeibler(q, prior) + Expectation(h, KullbackLeibler(q, prior))
                           + Entropy(q)).mean()
        v = loss.eval({"x": torch.randn(8, 3)})
        grads = torch.autograd.grad(v, [h.fc.weight, q.fc.weight])
        return v.detach(), list(grads), len(calls), len(hooks), torch.rand(2)
    return program


@pytest.mark.parametrize("kind", ["object", "tuple_subclass", "deep", "hook"])
def test_a_deterministic_whose_output_cannot_be_copied_or_has_hooks_runs_at_each_use(kind: str) -> None:
    """Probe p367: a reuse handed every use the same tensors where they sit in a container a copy cannot be made of
    (``q``'s dropout mask shared: loss 4.6729 where Pixyz gives 5.1186), and the copies of a tensor with a gradient
    hook sent the uses' summed gradient through the hook once (``h``'s weight gradient -0.0240 where Pixyz's
    per-use clipping gives -0.0668). Such a ``Deterministic`` runs at each use now, as under Pixyz: the value,
    both networks' gradients, the pass and hook counts and the random stream after are Pixyz's."""
    ref, ours = run_both(_held_program(kind))
    assert_same(ref, ours)


def _aliased_program(layout: str) -> Callable[[], Any]:
    """``h`` returns one tensor under two names, ``{"a": h, "b": h}``, or a view of it, ``{"a": h, "b": h[:, :2]}``,
    or two views of one tensor; two uses, the second's network changes ``a`` in place and then reads ``b``."""
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, KullbackLeibler

        class H(Deterministic):
            memoizable = True  # opts in to sharing one pass between uses (what this test is about)

            def __init__(self) -> None:
                super().__init__(var=["a", "b"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 4)

            def forward(self, x: torch.Tensor) -> dict:
                h = self.fc(x)
                if layout == "same":
                    return {"a": h, "b": h}
                if layout == "view":
                    return {"a": h, "b": h[:, :2]}
                return {"a": h[:, :3], "b": h[:, 1:]}

        class Q(Normal):
            def __init__(self, second: bool, name: str) -> None:
                super().__init__(var=["z"], cond_var=["a", "b"], name=name)
                self.w = nn.Parameter(torch.randn(3, 2))
                self.second = second

            def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict:
                if self.second:
                    a = a.mul_(2)
                o = a[:, :3] @ self.w + b[:, :2]
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q1, q2 = H(), Q(False, "q1"), Q(True, "q2")
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = (Expectation(h, KullbackLeibler(q1, prior)) + Expectation(h, KullbackLeibler(q2, prior))).mean()
        v = loss.eval({"x": torch.randn(4, 3)})
        return v.detach(), list(torch.autograd.grad(v, [h.fc.weight, q1.w, q2.w]))
    return program


@pytest.mark.parametrize("layout", ["same", "view", "two_views"])
def test_outputs_that_share_memory_share_it_in_a_reuses_copies(layout: str) -> None:
    """Probe p370: a reuse copied each name of an output separately, so ``b`` no longer saw the second use's
    in-place change of ``a`` where Pixyz's second run gives one tensor under both names (loss 10.9839 where Pixyz
    gives 16.8888). One tensor is one copy now, and views of one tensor are views of its copy: the value and the
    gradients are Pixyz's."""
    ref, ours = run_both(_aliased_program(layout))
    assert_same(ref, ours)
