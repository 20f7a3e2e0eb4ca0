"""Each flow: inverse(forward(x)) == x, and its log|det J| equals the log-determinant of the autograd Jacobian.

Everything runs in float64 on small inputs, so both sides agree to ~1e-10; the tolerances (1e-6) leave room for the
iterative inverse of the planar flow and the triangular solves of the LU convolution, nothing more.
"""
from __future__ import annotations

import pyro.distributions.transforms as T
import pytest
import torch
from torch import nn

from pyro_dgm.flows import (ActNorm2d, AffineCoupling, BatchNorm1d, BatchNorm2d, ChannelConv, Flatten, Flow, FlowList,
                            Permutation, PlanarFlow, Preprocess, Reverse, Shuffle, Squeeze, Unsqueeze)
from pyro_dgm.distributions.flow_distribution import real_nvp_flow
from pyro_dgm.layers import MLP, ResNet, ScaleTranslate

ATOL = 1e-6


def _randomize(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Give every parameter a random value, so that no flow is tested at its identity initialization."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


class ConvNet(nn.Module):
    """A small conv net for image couplings: (..., C, H, W) -> (log_s, t)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, 2 * c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.conv(x).chunk(2, dim=-3)
        return torch.tanh(s), t


class ContextNet(nn.Module):
    """A conditional coupling net: (x, y) -> (log_s, t)."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d + c, 2 * d)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.lin(torch.cat([x, y.expand(*x.shape[:-1], y.shape[-1])], -1)).chunk(2, -1)
        return torch.tanh(s), t


def _trained_batchnorm(bn: Flow, shape: tuple[int, ...]) -> Flow:
    bn.train()
    bn.forward(torch.randn(16, *shape, dtype=torch.float64) * 2 + 1)  # running stats = this batch (momentum 0)
    return _randomize(bn).eval()


def _initialized_actnorm() -> Flow:
    f = ActNorm2d(2).double()
    f.forward(torch.randn(8, 2, 3, 3, dtype=torch.float64) * 3 - 1)
    return _randomize(f)


def _resnet_coupling() -> Flow:
    net = ScaleTranslate(ResNet(2, 4, 4, num_blocks=1, kernel_size=3, padding=1, double_after_norm=True), 2, 3)
    return _randomize(AffineCoupling(2, mask_type="checkerboard", scale_translate_net=net)).eval()


def _realnvp_image() -> Flow:
    return _randomize(real_nvp_flow(1, num_multiscale_layers=1, image=True, mid_channels=4, num_blocks=1), 0.1).eval()


def _pyro_mix() -> Flow:
    return FlowList([PlanarFlow(3, constraint_u=True), _randomize(T.affine_autoregressive(3, hidden_dims=[8])),
                     T.Spline(3, count_bins=4), Reverse(3)])


@pytest.fixture(autouse=True)
def float64():
    """Pyro's transforms build some tensors in the default dtype, so make it float64 for these checks."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# name -> (flow factory, input shape of one sample, context shape or None)
CASES = {
    "planar-constrained": (lambda: _randomize(PlanarFlow(3, constraint_u=True), 1.0), (3,), None),
    "planar": (lambda: PlanarFlow(3), (3,), None),
    "coupling-channel": (lambda: AffineCoupling(4, scale_translate_net=ScaleTranslate(_randomize(MLP(4, 8, 8)), 4)),
                         (4,), None),
    "coupling-channel-inverse-mask": (lambda: AffineCoupling(
        4, inverse_mask=True, scale_net=nn.Sequential(nn.Linear(4, 4), nn.Tanh()), translate_net=nn.Linear(4, 4)),
        (4,), None),
    "coupling-checkerboard-vector": (lambda: AffineCoupling(
        5, mask_type="checkerboard", event_dim=1, scale_translate_net=ScaleTranslate(_randomize(MLP(5, 8, 10)), 5)),
        (5,), None),
    "coupling-checkerboard-image": (lambda: AffineCoupling(2, mask_type="checkerboard",
                                                           scale_translate_net=ConvNet(2)), (2, 3, 3), None),
    "coupling-channel-image": (lambda: AffineCoupling(4, event_dim=3, inverse_mask=True,
                                                      scale_translate_net=ConvNet(4)), (4, 2, 2), None),
    "coupling-resnet": (_resnet_coupling, (2, 2, 2), None),
    "coupling-conditional": (lambda: AffineCoupling(4, scale_translate_net=ContextNet(4, 2)), (4,), (2,)),
    "channel-conv": (lambda: ChannelConv(3), (3, 2, 2), None),
    "channel-conv-lu": (lambda: _randomize(ChannelConv(3, decomposed=True), 0.2), (3, 2, 2), None),
    "squeeze": (Squeeze, (1, 4, 4), None),
    "unsqueeze": (Unsqueeze, (4, 2, 2), None),
    "permutation": (lambda: Permutation([2, 0, 3, 1]), (4,), None),
    "shuffle-image": (lambda: Shuffle(3, event_dim=3), (3, 2, 2), None),
    "reverse": (lambda: Reverse(4), (4,), None),
    "flatten": (lambda: Flatten((2, 2, 2)), (2, 2, 2), None),
    "preprocess-logit": (lambda: Preprocess(dequantize=False, event_dim=1), (4,), None),
    "batchnorm1d": (lambda: _trained_batchnorm(BatchNorm1d(3).double(), (3,)), (3,), None),
    "batchnorm2d": (lambda: _trained_batchnorm(BatchNorm2d(2).double(), (2, 2, 2)), (2, 2, 2), None),
    "actnorm2d": (_initialized_actnorm, (2, 2, 2), None),
    "flowlist-with-pyro-transforms": (_pyro_mix, (3,), None),
    "realnvp-image": (_realnvp_image, (1, 4, 4), None),
}


def _setup(name: str, batch: int = 3) -> tuple[Flow, torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(sum(map(ord, name)))
    make, shape, ctx_shape = CASES[name]
    flow = make().double()
    x = torch.randn(batch, *shape, dtype=torch.float64)
    if name.startswith("preprocess"):
        x = torch.rand(batch, *shape, dtype=torch.float64)
    y = torch.randn(batch, *ctx_shape, dtype=torch.float64) if ctx_shape else None
    return flow, x, y


@pytest.mark.parametrize("name", sorted(CASES))
def test_inverse_of_forward_is_identity(name: str) -> None:
    flow, x, y = _setup(name)
    z, ld = flow.forward_with_logdet(x, y)
    x_back, ld_back = flow.inverse_with_logdet(z, y)
    assert torch.allclose(x_back, x, atol=ATOL), (x_back - x).abs().max()
    assert torch.allclose(ld_back, ld, atol=ATOL)  # both directions report log|det dz/dx| at the same x
    assert ld.shape == x.shape[:1]
    assert z.shape == flow.forward_shape(x.shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logdet_matches_autograd_jacobian(name: str) -> None:
    flow, x, y = _setup(name)
    _, ld = flow.forward_with_logdet(x, y)
    for i in range(x.shape[0]):
        yi = None if y is None else y[i:i + 1]

        def f(v: torch.Tensor) -> torch.Tensor:
            return flow.forward_with_logdet(v.reshape(1, *x.shape[1:]), yi)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, x[i].reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert torch.allclose(ld[i], logabsdet, atol=ATOL), (name, float(ld[i]), float(logabsdet))


def test_dequantizing_preprocess_round_trip_and_logdet() -> None:
    """With noise, inverse(forward(x)) recovers quantized pixels exactly, and the log-det is that of the map applied
    for the noise drawn (checked against autograd with the same noise)."""
    torch.manual_seed(0)
    f = Preprocess(num_levels=16).double()
    x = torch.randint(0, 16, (3, 1, 2, 2)).double() / 15
    assert torch.equal(f.inverse(f.forward(x)), x)
    for i in range(3):
        torch.manual_seed(i)
        _, ld = f.forward_with_logdet(x[i:i + 1])

        def g(v: torch.Tensor, i: int = i) -> torch.Tensor:
            torch.manual_seed(i)
            return f.forward(v.reshape(1, 1, 2, 2)).reshape(-1)

        assert torch.allclose(ld[0], torch.linalg.slogdet(torch.autograd.functional.jacobian(g, x[i].reshape(-1)))[1])


def test_any_leading_batch_dims() -> None:
    """Flows act on the event dims only: a (L, B, ...) input gives what each (B, ...) slice gives."""
    torch.manual_seed(0)
    for name in ["coupling-channel", "channel-conv-lu", "squeeze", "batchnorm2d", "flowlist-with-pyro-transforms"]:
        flow, x, _ = _setup(name, batch=6)
        xs = x.reshape(2, 3, *x.shape[1:])
        z, ld = flow.forward_with_logdet(xs)
        z0, ld0 = flow.forward_with_logdet(x)
        assert torch.allclose(z.reshape(z0.shape), z0) and torch.allclose(ld.reshape(-1), ld0), name


def test_flows_are_pyro_transforms() -> None:
    """A pyro_dgm flow goes into Pyro's TransformedDistribution; its log_prob is the change of variables."""
    import pyro.distributions as dist

    torch.manual_seed(0)
    flow = FlowList([AffineCoupling(2, scale_translate_net=ScaleTranslate(_randomize(MLP(2, 8, 4)), 2)),
                     Reverse(2), PlanarFlow(2, constraint_u=True)])
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, [flow])
    z = torch.randn(5, 2)
    x, ld = flow.inverse_with_logdet(z)
    assert torch.allclose(d.log_prob(z), base.log_prob(x) - ld, atol=1e-5)
    composed = torch.distributions.ComposeTransform([flow, Reverse(2)], cache_size=1)  # asks for with_cache(1)
    assert torch.allclose(composed.inv(composed(z)), z, atol=1e-5)
    sample = d.rsample((4,))
    assert sample.shape == (4, 2)
    assert torch.allclose(d.log_prob(sample), d.log_prob(sample.clone()), atol=1e-4)  # cached == recomputed


def test_pyro_planar_and_radial_in_a_flowlist() -> None:
    """Pyro's Planar and Radial have no inverse: a FlowList of them scores its own samples from its memory."""
    import pyro.distributions as dist

    torch.manual_seed(0)
    flow = FlowList([T.Planar(2), T.Radial(2), PlanarFlow(2)])
    x = torch.randn(4, 2)
    z, ld = flow.forward_with_logdet(x)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: flow.forward_with_logdet(v[None])[0][0], x[i])
        assert torch.allclose(ld[i], torch.linalg.slogdet(jac)[1], atol=ATOL)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, [flow])
    s = d.rsample((3,))
    x_s, ld_s = flow._dgm_memory.x, flow._dgm_memory.logdet
    assert torch.allclose(d.log_prob(s), base.log_prob(x_s) - ld_s)
    with pytest.raises(NotImplementedError, match="Radial has no inverse"):
        d.log_prob(s.clone())  # a value it did not sample cannot be inverted


def test_transform_cache_is_not_used_when_it_has_no_gradient() -> None:
    """A value sampled under no_grad is re-inverted when scored with gradients, so the flow's parameters get them."""
    torch.manual_seed(0)
    flow = PlanarFlow(2, constraint_u=True)
    with torch.no_grad():
        z = flow(torch.randn(3, 2))
    x = flow.inv(z)
    ld = flow.log_abs_det_jacobian(x, z)
    assert ld.requires_grad
    ld.sum().backward()
    assert flow.w.grad is not None and flow.w.grad.abs().sum() > 0


def test_memory_answers_only_the_reverse_of_an_unchanged_computation() -> None:
    """A sample is mapped back from memory; the same input is recomputed; an optimizer step invalidates the memory."""
    torch.manual_seed(0)
    flow = AffineCoupling(2, scale_translate_net=ScaleTranslate(_randomize(MLP(2, 8, 4)), 2))
    x = torch.randn(3, 2)
    z = flow(x)
    assert flow.inv(z) is x  # the reverse of what was computed: from memory
    assert flow(x) is not z  # the same input again: recomputed
    z = flow(x)
    opt = torch.optim.SGD(flow.parameters(), lr=1.0)
    flow.log_abs_det_jacobian(x, z).sum().backward()
    opt.step()
    x_back = flow.inv(z)
    assert x_back is not x and torch.allclose(flow(x_back), z)  # inverted with the new parameters


def test_batchnorm_training_uses_batch_statistics_and_inverts_them() -> None:
    torch.manual_seed(0)
    f = BatchNorm1d(2, momentum=0.5)
    x = torch.randn(50, 2) * 3 + 2
    z = f.forward(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(2), atol=1e-3)
    assert torch.allclose(f.inverse(z), x, atol=1e-4)
    assert torch.allclose(f.running_mean, 0.5 * torch.zeros(2) + 0.5 * x.mean(0))  # Pixyz's momentum convention


def test_actnorm_initialization_survives_state_dict() -> None:
    torch.manual_seed(0)
    f = ActNorm2d(2)
    f.forward(torch.randn(4, 2, 3, 3) * 3)
    g = ActNorm2d(2)
    g.load_state_dict(f.state_dict())
    x = torch.randn(4, 2, 3, 3) * 10
    assert torch.allclose(g.forward(x), f.forward(x))  # g does not re-initialize from this batch


def test_shuffle_permutation_is_in_state_dict() -> None:
    torch.manual_seed(0)
    a = Shuffle(6)
    torch.manual_seed(1)
    b = Shuffle(6)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.permute_indices, b.permute_indices)


def test_squeeze_matches_pixyz_channel_order() -> None:
    """Output channel 4c + 2i + j holds pixel (2h + i, 2w + j) of channel c (Pixyz's Squeeze doctest)."""
    a = torch.arange(1, 33).view(1, 2, 4, 4)
    z = Squeeze().forward(a)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(z[0, 4 * c + 2 * i + j], a[0, c, i::2, j::2])


def test_planar_constraint_makes_it_invertible() -> None:
    f = PlanarFlow(2, constraint_u=True)
    with torch.no_grad():
        f.w.copy_(torch.tensor([[1.0, 0.0]]))
        f.u.copy_(torch.tensor([[-5.0, 0.0]]))  # w.u = -5: not invertible without the constraint
    with torch.no_grad():
        assert float((f.w * f.u_hat()).sum()) >= -1.0
    x = torch.randn(10, 2)
    assert torch.allclose(f.inverse(f.forward(x)), x, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input
def test_wrong_number_of_channels_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"ChannelConv\(in_channels=3.*expected 3 channels at dim -3.*\(2, 4, 5, 5\)"):
        ChannelConv(3).forward(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"expected 4 features at dim -1.*shape \(\.\.\., 4\), got shape \(2, 3\)"):
        AffineCoupling(4, event_dim=1, scale_translate_net=lambda x: (x, x)).forward(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"ActNorm2d.*expected 2 channels"):
        ActNorm2d(2).forward(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"BatchNorm2d.*expected 3 channels"):
        BatchNorm2d(3).forward(torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"at least 3 dims"):
        ChannelConv(3).forward(torch.randn(3, 4))


def test_odd_dimension_for_a_channel_wise_mask_keeps_the_smaller_half() -> None:
    """As Pixyz: a channel-wise mask over 5 features keeps the first 5 // 2 (the last 3 with inverse_mask)."""
    f = AffineCoupling(5, scale_translate_net=lambda x: (x, x))
    assert f.build_mask(torch.zeros(2, 5)).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    g = AffineCoupling(3, inverse_mask=True, scale_translate_net=lambda x: (x, x))
    assert g.build_mask(torch.zeros(2, 3, 4, 4)).flatten().tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("make, x, match", [
    (Squeeze, torch.zeros(1, 1, 3, 4), "even height and width"),
    (Unsqueeze, torch.zeros(1, 3, 2, 2), "divisible by 4"),
    (Flatten, torch.zeros(2, 12), "unknown until forward"),
])
def test_shape_errors(make, x, match) -> None:
    f = make()
    with pytest.raises(ValueError, match=match):
        f.forward(x) if match != "unknown until forward" else f.inverse(x)


def test_other_construction_errors() -> None:
    with pytest.raises(ValueError, match="mask_type must be one of"):
        AffineCoupling(4, mask_type="stripes", scale_translate_net=lambda x: (x, x))
    with pytest.raises(ValueError, match="give scale_translate_net"):
        AffineCoupling(4, scale_net=lambda x: x)
    with pytest.raises(ValueError, match="permutation of range"):
        Permutation([0, 0, 1])
    with pytest.raises(ValueError, match="at least one flow"):
        FlowList([])
    with pytest.raises(TypeError, match="part 1 must be a flow"):
        FlowList([Reverse(2), nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="network's s must have the input's shape"):
        AffineCoupling(4, scale_translate_net=lambda x: (x[..., :2], x)).forward(torch.randn(2, 4))
    f = PlanarFlow(2)
    with torch.no_grad():
        f.w.copy_(torch.tensor([[1.0, 0.0]]))
        f.u.copy_(torch.tensor([[-5.0, 0.0]]))
    with pytest.raises(ValueError, match="not invertible.*constraint_u=True"):
        f.inverse(torch.randn(2, 2))


def _channel_moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3), unbiased=False)


def test_actnorm_sets_itself_from_the_first_batch_and_again_after_its_flag_is_reset() -> None:
    """The first training batch sets the per-channel affine map (zero mean, unit std out); later batches do not;
    ``inited = False`` (Pixyz's name) or loading an unset state makes the next batch set it again."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64) * 5 + 2
    x2 = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64) * 0.5 - 3
    f = ActNorm2d(3).double()
    unset = {k: v.clone() for k, v in f.state_dict().items()}
    mean, std = _channel_moments(f.forward(x1))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-10) and torch.allclose(std, torch.ones(3), atol=1e-4)
    mean, _ = _channel_moments(f.forward(x2))  # x1's map applied to x2: not centred
    assert (mean.abs() > 0.5).all()
    f.inited = False
    mean, std = _channel_moments(f.forward(x2))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-10) and torch.allclose(std, torch.ones(3), atol=1e-4)
    f.load_state_dict(unset)
    mean, _ = _channel_moments(f.forward(x1))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-10) and bool(f.initialized)


def test_a_flow_written_against_the_hook_names_before_the_prefix_still_maps() -> None:
    """A subclass implementing ``_forward_logdet``/``_inverse_logdet`` (the hooks' names before pyro_dgm's private
    names took the ``_dgm_`` prefix) is not silently the identity: its hooks are the flow's."""
    from pyro_dgm.flows import Flow

    class Shift(Flow):
        def _forward_logdet(self, x, context):
            return x + 1.0, torch.zeros(x.shape[:-1])

        def _inverse_logdet(self, z, context):
            return z - 1.0, torch.zeros(z.shape[:-1])

    f = Shift(2)
    x = torch.zeros(3, 2)
    assert torch.equal(f(x), x + 1.0) and torch.equal(f.inverse(x + 1.0), x)
    assert torch.equal(f.logdet_jacobian, torch.zeros(3))
