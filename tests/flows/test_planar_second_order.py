"""Second derivatives of ``PlanarFlow.inverse`` (probe p257): the inverse solves a scalar equation by bisection, then
takes Newton steps with gradients. One step gave the exact first derivatives but second derivatives without the
curvature term (4 % off in a Hessian of a density it scores), with nothing raised; two give both. The reference is
``gradgradcheck``'s finite differences in float64 (Pixyz has no planar inverse)."""
from __future__ import annotations

import pytest
import torch

from pyro_dgm.distributions import Normal, TransformedDistribution
from pyro_dgm.flows import FlowList, PlanarFlow


def _flow(constraint_u: bool) -> PlanarFlow:
    flow = PlanarFlow(2, constraint_u=constraint_u).double()
    with torch.no_grad():
        flow.u.copy_(torch.tensor([[1.5, -0.7]]))
        flow.w.copy_(torch.tensor([[0.9, 0.4]]))
        flow.b.fill_(0.2)
    return flow


def _inverse_at(flow: PlanarFlow, z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``flow.inverse(z)`` with the parameters ``u, w, b`` in place of the flow's (as gradcheck varies them)."""
    saved = flow.u, flow.w, flow.b
    try:
        flow._parameters.update(u=u, w=w, b=b)
        return flow.inverse(z)
    finally:
        flow._parameters.update(zip(("u", "w", "b"), saved))


@pytest.mark.parametrize("constraint_u", [True, False])
def test_the_inverse_has_exact_second_derivatives(constraint_u: bool) -> None:
    flow = _flow(constraint_u)
    z = torch.tensor([[0.3, -0.5], [1.2, 0.4]], dtype=torch.float64, requires_grad=True)
    inputs = (z, *(p.detach().clone().requires_grad_() for p in (flow.u, flow.w, flow.b)))
    assert torch.autograd.gradcheck(lambda *a: _inverse_at(flow, *a), inputs)
    assert torch.autograd.gradgradcheck(lambda *a: _inverse_at(flow, *a), inputs)


def test_a_density_scored_through_the_inverse_has_the_finite_difference_hessian() -> None:
    # log p(y) of a value the flow did not draw (scored through the inverse): its Hessian in y by double backward,
    # against central differences of its (exact) gradient; step 1e-5, so their error is about 1e-10
    flow = _flow(True)
    prior = Normal(loc=torch.tensor(0.0, dtype=torch.float64), scale=torch.tensor(1.0, dtype=torch.float64),
                   var=["z"], features_shape=[2])
    td = TransformedDistribution(prior, FlowList([flow]), var=["y"])

    def grad_at(y0: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        y = y0.clone().requires_grad_()
        return torch.autograd.grad(td.get_log_prob({"y": y}).sum(), y, create_graph=create_graph)[0], y

    y0 = torch.tensor([[0.8, -0.2]], dtype=torch.float64)
    g, y = grad_at(y0, True)
    hessian = torch.stack([torch.autograd.grad(g[0, i], y, retain_graph=True)[0][0] for i in range(2)])
    eye, eps = torch.eye(2, dtype=torch.float64), 1e-5
    finite = torch.stack([(grad_at(y0 + eps * eye[i])[0][0] - grad_at(y0 - eps * eye[i])[0][0]) / (2 * eps)
                          for i in range(2)])
    torch.testing.assert_close(hessian, finite, rtol=1e-7, atol=1e-8)
