"""Flow distributions: exact densities (they integrate to 1), Pyro sites, products, losses' calls, printing, errors.

Integration tolerance: every density below is smooth, and its mass outside the grid is below 1e-6 (the grids were
chosen by widening them until the integral stopped changing: the base is N(0, 1) and the flows move mass by a bounded
amount). The trapezoid rule's error, h^2/12 * integral |p''|, is then ~1e-5 on the 1-D grids (h <= 3.5e-3) and ~1e-4
on the 2-D grids (h = 0.05 and 0.1, where the densities are wide). So 2e-3 (1-D) and 5e-3 (2-D) bound the numerical
error, while a wrong log-det term (a factor e^{+-logdet} far from 1 over most of the mass) misses by far more.
"""
from __future__ import annotations

import pyro
import pyro.distributions.transforms as T
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.distributions.flow_distribution import (InverseTransformedDistribution, PlanarFlowDistribution,
                                                      RealNVP, RealNVPDistribution, TransformedDistribution)
from pyro_dgm.flows import (ActNorm2d, AffineCoupling, BatchNorm1d, ChannelConv, FlowList, PlanarFlow, Preprocess,
                            Reverse, Squeeze, Unsqueeze)
from pyro_dgm.layers import ResNet, ScaleTranslate


def _trapezoid_1d(p, lo: float, hi: float, n: int, **inputs) -> float:
    grid = torch.linspace(lo, hi, n, dtype=torch.float64).unsqueeze(-1)
    values = {"x": grid, **{k: v.expand(n, -1) for k, v in inputs.items()}}
    with torch.no_grad():
        dens = p.get_log_prob(values).exp()
    return float(torch.trapezoid(dens, grid.squeeze(-1)))


def _trapezoid_2d(p, lo: float, hi: float, n: int, **inputs) -> float:
    g = torch.linspace(lo, hi, n, dtype=torch.float64)
    xx = torch.cartesian_prod(g, g)
    with torch.no_grad():
        dens = p.get_log_prob({"x": xx, **{k: v.expand(len(xx), -1) for k, v in inputs.items()}}).exp()
    return float(torch.trapezoid(torch.trapezoid(dens.reshape(n, n), g), g))


def _std_normal(var: str, dim: int = 1) -> Normal:
    return Normal(loc=torch.zeros(dim), scale=1.0, var=[var], name="p_{0}")


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _set(param: torch.Tensor, value) -> None:
    with torch.no_grad():
        param.copy_(torch.as_tensor(value, dtype=param.dtype).reshape(param.shape))


def _strong_planar(constraint_u: bool = True) -> PlanarFlow:
    f = PlanarFlow(1, constraint_u=constraint_u)
    _set(f.w, 3.0)
    _set(f.u, 2.0)
    _set(f.b, 0.5)
    return f


# ---------------------------------------------------------------------------------------------- densities
def test_transformed_density_integrates_to_one() -> None:
    """Planar flows (sampling direction): scored through their iterative inverse; the result is a density."""
    flow = FlowList([_strong_planar(), _strong_planar()])
    p = TransformedDistribution(_std_normal("z"), flow, var=["x"])
    assert abs(_trapezoid_1d(p, -14, 14, 8001) - 1) < 2e-3
    # the flow is far from the identity: the density differs from the prior's somewhere by a lot
    grid = {"x": torch.linspace(-3, 3, 61).unsqueeze(-1)}
    assert (p.get_log_prob(grid) - p.prior.get_log_prob({"z": grid["x"]})).abs().max() > 0.5


@pytest.mark.parametrize("make, lo, hi", [
    (lambda: FlowList([_strong_planar(), T.Spline(1, count_bins=6)]), -14, 14),
    (lambda: _trained_bn(), -30, 30),
])
def test_inverse_transformed_density_integrates_to_one(make, lo, hi) -> None:
    torch.manual_seed(0)
    flow = make()
    with torch.no_grad():  # a random, non-trivial spline
        for prm in flow.parameters():
            prm.add_(0.5 * torch.randn_like(prm))
    p = InverseTransformedDistribution(_std_normal("z"), flow, var=["x"])
    assert abs(_trapezoid_1d(p, lo, hi, 20001) - 1) < 2e-3


def test_logit_preprocess_density_has_the_mass_of_its_range() -> None:
    """Preprocess maps (0, 1) onto (logit(a/2), logit(1 - a/2)) only, so the density of x holds exactly the prior's
    mass on that interval: P(|z| < logit(1 - a/2)) = 0.99677 for a = 0.1 (not 1)."""
    alpha = 0.1
    p = InverseTransformedDistribution(_std_normal("z"), Preprocess(dequantize=False, alpha=alpha, event_dim=1),
                                       var=["x"])
    b = torch.logit(torch.tensor(1 - alpha / 2))
    mass = float(torch.special.ndtr(b) - torch.special.ndtr(-b))
    assert abs(_trapezoid_1d(p, 0, 1, 20001) - mass) < 1e-5


def _trained_bn() -> BatchNorm1d:
    bn = BatchNorm1d(1)
    bn.forward(torch.randn(100, 1) * 4 + 3)
    return bn.eval()


def test_conditional_flow_density_integrates_to_one_for_each_context() -> None:
    torch.manual_seed(0)
    net = ScaleTranslate(nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 4)), 2)
    cond_net = lambda x, y: net.forward(torch.cat([x[..., :1], y.expand(*x.shape[:-1], 2)], -1))  # noqa: E731
    flow = FlowList([AffineCoupling(2, scale_translate_net=lambda x, y: cond_net(x, y)), Reverse(2),
                     AffineCoupling(2, scale_translate_net=lambda x, y: cond_net(x, y))])
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(0.5 * torch.randn_like(prm))
    p = InverseTransformedDistribution(_std_normal("z", 2), flow, var=["x"], cond_var=["y"])
    for y in (torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, -1.0]])):
        assert abs(_trapezoid_2d(p, -30, 30, 601, y=y) - 1) < 5e-3  # wide: this flow spreads the mass to |x| ~ 20
    samples = p.sample({"y": torch.ones(7, 2)})["x"]  # the context's batch size, though the prior has none
    assert samples.shape == (7, 2)
    # and the change of variables by hand: log p(z=f(x,y)) + log|det|
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    z, ld = flow.forward_with_logdet(x, y)
    assert torch.allclose(p.get_log_prob({"x": x, "y": y}), p.prior.get_log_prob({"z": z}) + ld)


def test_realnvp_density_integrates_to_one_in_2d() -> None:
    torch.manual_seed(0)
    p = RealNVPDistribution(_std_normal("z", 2), dim=2, num_multiscale_layers=2, hidden_features=16)
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    assert abs(_trapezoid_2d(p, -10, 10, 401) - 1) < 5e-3
    x = torch.linspace(-3, 3, 61).unsqueeze(-1).expand(61, 2)
    assert (p.get_log_prob({"x": x}) - p.prior.get_log_prob({"z": x})).abs().max() > 1.0  # far from the identity


def test_sampled_values_score_like_fresh_values() -> None:
    """Scoring a sample uses the flow's memory; a copy of it is inverted from scratch: both give the same density."""
    torch.manual_seed(0)
    q = PlanarFlowDistribution(_std_normal("z_0", 2), dim=2, num_layers=3, var=["z"], name="q")
    for reparam in (False, True):
        s = q.sample(batch_n=4, reparam=reparam)
        assert torch.allclose(q.get_log_prob(s), q.get_log_prob({"z": s["z"].clone()}), atol=1e-8)
        assert torch.allclose(q.flow.inverse(s["z"]), s["z_0"], atol=1e-8)  # the prior's sample comes back too


def test_log_prob_of_a_no_grad_sample_has_gradients() -> None:
    torch.manual_seed(0)
    q = PlanarFlowDistribution(_std_normal("z_0", 2), dim=2, num_layers=2, var=["z"])
    s = q.sample(batch_n=3)  # reparam=False: drawn under no_grad
    q.get_log_prob(s).sum().backward()
    assert all(prm.grad is not None and prm.grad.abs().sum() > 0 for prm in q.flow.parameters())


def test_shapes_with_batch_n_and_sample_shape() -> None:
    torch.manual_seed(0)
    q0 = Normal(loc="h", scale=1.0, var=["z_0"], cond_var=["h"])
    q = PlanarFlowDistribution(q0, dim=2, num_layers=2, var=["z"], name="q")
    s = q.sample({"h": torch.zeros(3, 2)}, sample_shape=[5])
    assert s["z"].shape == (5, 3, 2)
    assert q._dgm_get_log_prob(s).shape == (5, 3)  # one value per draw
    assert q.get_log_prob(s).shape == (5,)  # Pixyz's convention: summed over every dim but the first
    assert q.dist({"h": torch.zeros(3, 2)}).event_shape == (2,)
    p = TransformedDistribution(_std_normal("x", 2), PlanarFlow(2), var=["z"])
    assert p.sample(batch_n=7)["z"].shape == (7, 2)
    assert p.sample(batch_n=7, sample_mean=True)["z"].shape == (7, 2)


def test_image_realnvp_round_trip() -> None:
    torch.manual_seed(0)
    prior = Normal(loc=torch.zeros(1, 4, 4), scale=1.0, var=["z"])
    p = RealNVP(prior, dim=1, num_multiscale_layers=1, image=True, mid_channels=4, num_blocks=1).eval()
    x = torch.randn(2, 1, 4, 4)
    z = p.inference({"x": x})["z"]
    assert z.shape == x.shape
    assert torch.allclose(p.inverse(z), x, atol=1e-8)
    lp = p.get_log_prob({"x": x})
    assert lp.shape == (2,)
    # change of variables with the Jacobian from autograd: log p(x) = log N(z(x); 0, I) + log|det dz/dx|
    for i in range(2):
        def to_z(v: torch.Tensor) -> torch.Tensor:
            return p.inference({"x": v.view(1, 1, 4, 4)})["z"].reshape(16)
        jac = torch.autograd.functional.jacobian(to_z, x[i].reshape(16))
        ref = torch.distributions.Normal(0.0, 1.0).log_prob(to_z(x[i].reshape(16))).sum() + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], ref, atol=1e-4)
    assert p.sample(batch_n=3)["x"].shape == (3, 1, 4, 4)


def test_glow_trains_on_the_same_batch_and_samples_pixels() -> None:
    """The seed paper's Glow (5.2): dequantize, squeeze, then (actnorm, 1x1 conv, coupling) steps, as the inverse of
    an InverseTransformedDistribution. Scoring the same data tensor after each optimizer step recomputes the flow
    (nothing stale or freed is reused), the likelihood rises, and samples are pixels of the data's levels."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)

    def step(c: int) -> list:
        st = ScaleTranslate(ResNet(c, 8, 2 * c, num_blocks=1, kernel_size=3, padding=1, double_after_norm=False), c, 3)
        return [ActNorm2d(c), ChannelConv(c, decomposed=True), AffineCoupling(c, event_dim=3, scale_translate_net=st)]

    flow = FlowList([Preprocess(num_levels=4), Squeeze(), *step(4), *step(4), Unsqueeze()])
    p = InverseTransformedDistribution(Normal(loc=torch.zeros(1, 4, 4), scale=1.0, var=["z"]), flow, var=["x"])
    x = (torch.rand(16, 1, 4, 4) > 0.5).float()
    x[:, :, :2] = 1.0
    opt = torch.optim.Adam(p.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = -p.get_log_prob({"x": x}).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 2.0
    samples = p.eval().sample(batch_n=5)["x"]
    assert samples.shape == (5, 1, 4, 4)
    assert torch.isin(samples, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])).all()


# ---------------------------------------------------------------------------------------------- Pyro and products
def test_flow_distribution_in_a_product_traced_by_pyro() -> None:
    torch.manual_seed(0)
    decoder = Normal(loc="z", scale=0.5, var=["x"], cond_var=["z"], name="p")
    prior = PlanarFlowDistribution(_std_normal("z_0", 2), dim=2, num_layers=2, var=["z"], name="p_{prior}")
    joint = decoder * prior
    assert joint.prob_joint_factorized_and_text == "p(x,z) = p(x|z)p_{prior}(z)"
    x = torch.randn(6, 2)
    tr = poutine.trace(joint.model).get_trace(x=x)
    z_site, x_site = tr.nodes["z"], tr.nodes["x"]
    assert not z_site["is_observed"] and x_site["is_observed"]
    assert isinstance(z_site["fn"], pyro.distributions.TransformedDistribution)
    assert z_site["value"].shape == (6, 2) and "z_0" not in tr.nodes  # one site per variable of the formula
    tr.compute_log_prob()
    values = {"x": x, "z": z_site["value"]}
    assert torch.allclose(tr.nodes["z"]["log_prob"], prior.get_log_prob(values))
    assert torch.allclose(tr.log_prob_sum(), joint.get_log_prob(values).sum())
    # in a plate given by the caller, and with the flow as the guide of SVI
    with pyro.plate("data", 6, dim=-1):
        tr2 = poutine.trace(prior.model).get_trace()
    assert tr2.nodes["z"]["value"].shape == (6, 2)


def test_flow_guide_elbo_has_gradients_for_the_flow() -> None:
    torch.manual_seed(0)
    pyro.clear_param_store()
    decoder = Normal(loc="z", scale=0.5, var=["x"], cond_var=["z"], name="p")
    joint = decoder * Normal(loc=torch.zeros(2), scale=1.0, var=["z"], name="p_{prior}")
    q0 = Normal(loc="x", scale=1.0, var=["z_0"], cond_var=["x"], name="q")
    q = PlanarFlowDistribution(q0, dim=2, num_layers=2, var=["z"], name="q")
    x = torch.randn(4, 2)

    def loss_at_seed() -> torch.Tensor:  # the same base draw each call: the loss is a smooth function of the flow
        pyro.set_rng_seed(5)
        return Trace_ELBO().differentiable_loss(joint.model, q.guide, x=x)

    loss = loss_at_seed()
    loss.backward()
    # the value: -(log p(x, z) - log q(z|x)) at the guide's z, log p(x, z) from the joint's own density
    pyro.set_rng_seed(5)
    tr = poutine.trace(q.guide).get_trace(x=x)
    tr.compute_log_prob()
    z = tr.nodes["z"]["value"]
    expected = -(joint.get_log_prob({"x": x, "z": z}).sum() - tr.nodes["z"]["log_prob"].sum())
    assert torch.allclose(loss, expected, atol=1e-5)
    # the gradient flows through the samples into every flow parameter: central differences of the same loss
    # (eps = 1e-2: truncation error O(eps^2) relative to the curvature, float32 round-off ~ 30 * 1e-7 / eps)
    eps = 1e-2
    for name, prm in q.flow.named_parameters():
        with torch.no_grad():
            prm.view(-1)[0] += eps
            up = loss_at_seed()
            prm.view(-1)[0] -= 2 * eps
            down = loss_at_seed()
            prm.view(-1)[0] += eps
        fd = float(up - down) / (2 * eps)
        assert abs(float(prm.grad.view(-1)[0]) - fd) < 2e-2 * abs(fd) + 1e-2, name


def test_density_model_as_pyro_model_gives_the_log_likelihood() -> None:
    torch.manual_seed(0)
    pyro.clear_param_store()
    p = RealNVPDistribution(_std_normal("z", 2), dim=2, hidden_features=8)
    x = torch.randn(5, 2)
    loss = Trace_ELBO().differentiable_loss(p.model, lambda x: None, x=x)
    assert torch.allclose(loss, -p.get_log_prob({"x": x}).sum())


def test_renamed_flow_distribution() -> None:
    torch.manual_seed(0)
    q0 = Normal(loc="h", scale=1.0, var=["z_0"], cond_var=["h"])
    q = PlanarFlowDistribution(q0, dim=2, num_layers=2, var=["z"], name="q")
    r = q.replace_var(z="w", h="a")
    assert r.prob_text == "q(w|a)"
    a = torch.randn(3, 2)
    s = r.sample({"a": a})
    assert torch.allclose(r.get_log_prob(s), q.get_log_prob({"z": s["w"], "h": a}))


def test_printing() -> None:
    p = InverseTransformedDistribution(_std_normal("z", 2), [ChannelConv(2)], var=["x"], name="p")
    text = str(p)
    assert "p(x) = p(x=f^{-1}_{flow}(z))" in text and "(0): ChannelConv()" in text  # as Pixyz prints it
    assert p._repr_latex_() == "$$p(x) = p(x=f^{-1}_{flow}(z))$$"
    q = TransformedDistribution(_std_normal("x", 2), PlanarFlow(2), var=["z"], name="q")
    assert "PlanarFlow(in_features=2, constraint_u=False)" in str(q)


# ---------------------------------------------------------------------------------------------- errors
def test_errors_name_what_was_expected() -> None:
    prior = _std_normal("z", 2)
    with pytest.raises(ValueError, match="does not factorize over features"):
        TransformedDistribution(prior, PlanarFlow(2), var=["x"]).get_log_prob({"x": torch.zeros(1, 2)},
                                                                              sum_features=False)
    # several conditioning variables: the flow gets the first (as in Pixyz; see tests/pixyz_compat/test_diff_flows.py)
    assert InverseTransformedDistribution(prior, PlanarFlow(2), var=["x"], cond_var=["a", "b"]).cond_var == ["a", "b"]
    with pytest.raises(TypeError, match="must be a single distribution"):
        TransformedDistribution(prior * Normal(loc="z", scale=1.0, var=["y"], cond_var=["z"]), PlanarFlow(2),
                                var=["x"])
    with pytest.raises(TypeError, match="flow must be a Flow"):
        TransformedDistribution(prior, nn.Linear(2, 2), var=["x"])
    with pytest.raises(ValueError, match="generates one variable"):
        TransformedDistribution(prior, PlanarFlow(2), var=["x", "y"])
    with pytest.raises(ValueError, match=r"expected 'x' of shape \(\.\.\., 2\), got \(4, 3\)"):
        InverseTransformedDistribution(prior, PlanarFlow(2), var=["x"]).get_log_prob({"x": torch.zeros(4, 3)})
    with pytest.raises(NotImplementedError, match="entropy of a flow distribution has no closed form"):
        TransformedDistribution(prior, PlanarFlow(2), var=["x"]).get_entropy()
    with pytest.raises(ValueError, match="pass its context"):
        InverseTransformedDistribution(prior, [T.conditional_affine_coupling(2, 1)], var=["x"]).get_log_prob(
            {"x": torch.zeros(1, 2)})
