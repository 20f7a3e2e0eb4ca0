"""Flow distributions that probe p492 found scored otherwise than Pixyz: the last draw's ``x`` scored with an input
``u`` that is not the draw's (an earlier draw's, or the draw's shifted) took the log-det at that ``u``, where Pixyz's
``get_log_prob`` subtracts the draw's (the one its flow stored, or computes again at its inverse of ``x``, the draw's
input); and, documented, the gradient of an inverse draw through a batch norm's statistics of an earlier call, which
Pixyz keeps attached and ours holds detached. Each program runs under Pixyz and here through the harness, from the
same seed; the stale-input scores are also checked against the closed form of a hand-written twin."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from pixyz_harness import assert_same, run_both


def _layer(kind: str) -> Any:
    """A flow layer on 2 features whose log-det depends on its input, made inside a program."""
    import torch
    from pixyz.flows import AffineCoupling, Flow, PlanarFlow

    if kind == "coupling":
        def st(x: Any) -> tuple:
            h = x.sum(-1, keepdim=True).expand_as(x)
            return torch.tanh(h), 0.3 * h

        return AffineCoupling(2, scale_translate_net=st)
    if kind == "planar":
        return PlanarFlow(2)

    class NoInverse(Flow):  # z = x + tanh(w x) / 2, its inverse not written (Pixyz's answers its stored draw)
        def __init__(self) -> None:
            super().__init__(2)
            self.w = torch.nn.Parameter(torch.tensor([0.7, -0.3]))

        def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
            t = torch.tanh(x * self.w)
            if compute_jacobian:
                self._logdet_jacobian = torch.log1p(0.5 * self.w * (1 - t ** 2)).sum(-1)
            return x + 0.5 * t

        def inverse(self, z: Any, y: Any = None) -> Any:
            raise NotImplementedError()

    return NoInverse()


@pytest.mark.parametrize("kind", ["coupling", "planar", "no_inverse"])
@pytest.mark.parametrize("compute_jacobian", [False, True])
def test_a_stale_or_shifted_input_is_scored_with_the_draws_log_det(kind: str, compute_jacobian: bool) -> None:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution

        flow = _layer(kind)
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), flow, var=["x"])
        params = [p for p in q.parameters() if p.requires_grad]
        s1 = q.sample(batch_n=3)
        s2 = q.sample(batch_n=3)
        stale = q.get_log_prob({"x": s2["x"], "u": s1["u"]}, compute_jacobian=compute_jacobian)
        s3 = q.sample(batch_n=3)
        shifted = q.get_log_prob({"x": s3["x"], "u": s3["u"] + 0.1}, compute_jacobian=compute_jacobian)
        grads = torch.autograd.grad((stale + shifted).sum(), params) if params else []
        ld = flow.logdet_jacobian
        return [s1["u"], s2["u"], s3["u"], stale, shifted, ld, *grads]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    if kind == "coupling":  # the closed form: the mask keeps u1 (the net sees [u1, 0]), log s = tanh(u1) on u2
        def prior(u: torch.Tensor) -> torch.Tensor:
            return torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1)

        def ld(u: torch.Tensor) -> torch.Tensor:
            return torch.tanh(u[:, 0])

        u1, u2, u3 = ours[:3]
        torch.testing.assert_close(ours[3], prior(u1) - ld(u2))
        torch.testing.assert_close(ours[4], prior(u3 + 0.1) - ld(u3))


def test_an_inverse_draw_through_batch_norm_statistics_of_an_earlier_call() -> None:
    """Documented (porting.md): data scored before an inverse draw leaves a batch norm's statistics; Pixyz's keep that
    batch's graph, so the draw's gradient goes through them and a second draw's backward raises; ours are held
    detached after that call (the gradient of the closed form with the statistics constant), and every draw trains."""

    def program() -> Any:
        import torch
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import BatchNorm1d, Flow, FlowList

        class Affine(Flow):
            def __init__(self) -> None:
                super().__init__(2)
                self.a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
                self.b = torch.nn.Parameter(torch.tensor([0.5, -0.4]))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                if compute_jacobian:
                    self._logdet_jacobian = self.a.sum().expand(x.shape[0])
                return x * torch.exp(self.a) + self.b

            def inverse(self, z: Any, y: Any = None) -> Any:
                return (z - self.b) * torch.exp(-self.a)

        affine = Affine()
        p = InverseTransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"]),
                                           FlowList([affine, BatchNorm1d(2)]), var=["x"])
        data = torch.randn(5, 2)
        p.get_log_prob({"x": data})
        out: list = [data]
        for _ in range(2):
            s = p.sample(batch_n=3)
            try:
                lp = p.get_log_prob({"x": s["x"]})
                out += [s["z"], lp, *torch.autograd.grad(lp.sum(), [affine.a, affine.b])]
            except RuntimeError as e:
                out.append("backward through the graph a second time" in str(e))
        return out

    ref, ours = run_both(program)
    assert ref[-1] is True and len(ours) == 9  # Pixyz's second draw raises; ours trains
    a, b = torch.tensor([0.3, -0.2], requires_grad=True), torch.tensor([0.5, -0.4], requires_grad=True)
    h = ours[0] * torch.exp(a.detach()) + b.detach()
    eps = 1e-7
    mean, var = h.mean(0), (h - h.mean(0)).pow(2).mean(0) + eps  # the data's statistics, constants
    for z, lp, ga, gb in (ours[1:5], ours[5:9]):
        x = ((z * var.sqrt() + mean) - b) * torch.exp(-a)  # the draw: the inverse at the last statistics
        hx = x * torch.exp(a) + b  # scored: the forward, with this batch's statistics (the next draw's, constants)
        m, v = hx.mean(0), (hx - hx.mean(0)).pow(2).mean(0) + eps
        mean, var = m.detach(), v.detach()
        twin = torch.distributions.Normal(0.0, 1.0).log_prob((hx - m) / v.sqrt()).sum(-1) + a.sum() \
            - 0.5 * torch.log(v).sum()
        want = torch.autograd.grad(twin.sum(), [a, b])
        torch.testing.assert_close(lp, twin.detach())
        torch.testing.assert_close(ga, want[0])
        torch.testing.assert_close(gb, want[1])
    assert not torch.allclose(ref[4], ours[3])  # Pixyz's first gradient goes through the data's statistics too


@pytest.mark.parametrize("name", ["tau", "t_step", "alpha", "t"])
@pytest.mark.parametrize("max_iter", [None, "tensor"])
def test_iterative_loss_latex_typesets_its_index_as_the_text_does(name: str, max_iter: Any) -> None:
    """``IterativeLoss.latex`` (ours: the written-order text that error messages quote) put the time step's name and a
    tensor ``max_iter`` raw into the sum (``\\sum_{tau=0}^{tau_{max} - 1}``, ``^{tensor(2)}``) where Pixyz's text,
    and the body, typeset them (p493). For one term the two texts are the same."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss

        p = Normal(var=["x"], cond_var=["z", name], loc="z", scale=1.0)
        steps = None if max_iter is None else torch.tensor(3)
        it = IterativeLoss(p.log_prob().mean(), series_var=["x", "z"], timestep_var=[name], max_iter=steps)
        return [str(it), getattr(it, "latex", str(it)), str(it + 1), getattr(it + 1, "latex", str(it + 1))]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[1] == ours[0] and ours[3] == ours[2]


def test_a_given_input_leaves_the_draw_remembered_for_a_flow_with_its_own_inverse() -> None:
    """A flow with an inverse written for Pixyz, its last draw scored with a shifted ``u`` and
    ``compute_jacobian=True``: the flow remembered the given ``u`` as the draw's input, so its ``logdet_jacobian`` was
    the forward's at that ``u`` and ``stored_x`` held it (p498); Pixyz's are at its inverse of ``x``, the draw's
    input (the closed form below), and ``stored_x`` is what the draw stored."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import Flow

        class Coupled(Flow):  # z1 = x1 + b0, z2 = x2 exp(a1 tanh(x1 + a0)) + b1
            def __init__(self) -> None:
                super().__init__(2)
                self.a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
                self.b = torch.nn.Parameter(torch.tensor([0.5, -0.4]))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                s = self.a[1] * torch.tanh(x[..., :1] + self.a[0])
                if compute_jacobian:
                    self._logdet_jacobian = s.sum(-1)
                return torch.cat([x[..., :1] + self.b[0], x[..., 1:] * torch.exp(s) + self.b[1]], -1)

            def inverse(self, z: Any, y: Any = None) -> Any:
                x1 = z[..., :1] - self.b[0]
                s = self.a[1] * torch.tanh(x1 + self.a[0])
                return torch.cat([x1, (z[..., 1:] - self.b[1]) * torch.exp(-s)], -1)

        flow = Coupled()
        q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"]), flow, var=["x"])
        s = q.sample(batch_n=3)
        lp = q.get_log_prob({"x": s["x"], "u": s["u"] + 1.0}, compute_jacobian=True)
        return [s["u"], lp, flow.logdet_jacobian, list(q.stored_x.values())[0]]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    u = ours[0]
    torch.testing.assert_close(ours[2], -0.2 * torch.tanh(u[:, 0] + 0.3))
    torch.testing.assert_close(ours[3], u)


@pytest.mark.parametrize("changed", [False, True])
def test_a_flow_without_inverse_scores_its_draw_unless_changed_in_place(changed: bool) -> None:
    """A flow written for Pixyz without an inverse (Pixyz's identity stands for it): its own draw, scored alone, is
    the draw's density here (Pixyz's is the identity's value); a draw changed in place since is another value, which
    goes through the identity as in Pixyz (p501: it was scored as the draw before the change)."""

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import Flow

        class NoInverse(Flow):  # z = x exp(a) + c
            def __init__(self) -> None:
                super().__init__(3)
                self.a = torch.nn.Parameter(torch.full((3,), -0.2))
                self.c = torch.nn.Parameter(torch.full((3,), 1.0))

            def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                if compute_jacobian:
                    self._logdet_jacobian = (self.a * torch.ones_like(x)).sum(-1)
                return x * self.a.exp() + self.c

        p = TransformedDistribution(Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"]), NoInverse(),
                                    var=["z"])
        s = p.sample(batch_n=3)
        if changed:
            with torch.no_grad():
                s["z"].add_(1.0)
        return [s["x"], s["z"], p.get_log_prob({"z": s["z"]})]

    ref, ours = run_both(program)
    normal = torch.distributions.Normal(0.0, 1.0)
    x, z, lp = ours
    if changed:
        assert_same(ref, ours)
        torch.testing.assert_close(lp, normal.log_prob(z).sum(-1) + 0.6)  # the identity's value, minus the log-det
    else:
        assert_same(ref[:2], ours[:2])
        torch.testing.assert_close(lp, normal.log_prob(x).sum(-1) + 0.6)  # the draw's density
        assert not torch.allclose(ref[2], lp)  # Pixyz's: the identity's value
