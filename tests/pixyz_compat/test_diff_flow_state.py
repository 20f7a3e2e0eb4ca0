"""What a flow's ``logdet_jacobian`` holds after each call, and which of a Pixyz-style flow's methods run, under Pixyz
0.3.3 and here (:mod:`pixyz_harness`).

A Pixyz program may read ``flow.logdet_jacobian`` or ``dist.logdet_jacobian`` after a call (to log it, or to add it
to a loss), and a flow written the Pixyz way may count or log its calls. Proven here, for the built-in flows, a
``FlowList`` and its layers, and user flows:

- ``TransformedDistribution.get_log_prob(..., compute_jacobian=True)`` leaves the log-det at :math:`f^{-1}(z)` in the
  flow and its layers (before, here: the previous one was kept); with a batch norm in training mode, its forward runs
  again on :math:`f^{-1}(z)` (its statistics and log-det are those of that batch), as in Pixyz;
- ``TransformedDistribution.sample(..., compute_jacobian=False)`` leaves them as they were (before: overwritten);
- scoring a value an ``InverseTransformedDistribution`` has just drawn stores each layer's log-det (before: only the
  list's), ``inference`` (``compute_jacobian=False``) stores none, and a conditional one's ``get_log_prob`` stores
  it (before: ``None``), while its ``sample`` and ``inverse`` leave it;
- a user flow's draws through an ``InverseTransformedDistribution`` run its ``inverse`` alone (before: its
  ``forward`` too, so one whose ``forward`` raises ``NotImplementedError`` could not draw), and scoring runs its
  ``forward`` once (before: twice); a ``TransformedDistribution`` runs its ``inverse`` when scoring a draw, as Pixyz
  does before looking up the value it drew;
- a planar flow's log-det for a batch of one is a scalar (Pixyz squeezes it), also summed in a ``FlowList``; the
  volume-preserving flows keep Pixyz's ``0``.

Not compared: the value of ``TransformedDistribution.get_log_prob`` where Pixyz's is wrong (without
``compute_jacobian`` it subtracts whatever log-det was stored last; with a training-mode batch norm it mixes the
statistics of two batches). Here it is the exact log-density.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from pixyz_harness import assert_same, run_both


def _stored(flow: Any) -> list[Any]:
    """``(class name, shape or value, value)`` of the stored log-det of a flow and each of its layers."""
    import torch
    out = []
    for f in [flow, *getattr(flow, "flow_list", [])]:
        ld = f.logdet_jacobian
        out.append((type(f).__name__, tuple(ld.shape) if isinstance(ld, torch.Tensor) else repr(ld), ld))
    return out


def prog_transformed_get_log_prob_with_compute_jacobian() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import AffineCoupling, BatchNorm1d, FlowList, Reverse, Shuffle

    f = FlowList([AffineCoupling(4, scale_net=nn.Linear(4, 4), translate_net=nn.Linear(4, 4)), Reverse(4),
                  BatchNorm1d(4), Shuffle(4)])
    f.eval()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[4])
    q = TransformedDistribution(prior, f, var=["z"])
    f(torch.randn(6, 4))
    z = torch.randn(3, 4)
    out = {"log_prob": q.get_log_prob({"z": z}, compute_jacobian=True), "stored": _stored(f),
           "dist": q.logdet_jacobian}
    s = q.sample(batch_n=5)
    f(torch.randn(2, 4))
    out["log_prob of a draw"] = q.get_log_prob(s, compute_jacobian=True)
    out["stored after the draw"] = _stored(f)
    return out


def prog_transformed_get_log_prob_with_a_training_batch_norm() -> Any:
    import torch
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import BatchNorm1d, FlowList

    f = FlowList([BatchNorm1d(2)])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
    q = TransformedDistribution(prior, f, var=["z"])
    q.sample(batch_n=5)
    q.get_log_prob({"z": torch.randn(4, 2) * 3}, compute_jacobian=True)
    bn = f.flow_list[0]
    return {"stored": _stored(f), "running": (bn.running_mean, bn.running_var)}


def prog_planar_flows_scored_with_compute_jacobian() -> Any:
    import torch
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow

    f = FlowList([PlanarFlow(2), PlanarFlow(2)])
    q = TransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2]),
                                f, var=["z"])
    s = q.sample(batch_n=4)
    f(torch.randn(7, 2))
    out = {"log_prob": q.get_log_prob(s, compute_jacobian=True), "stored": _stored(f)}
    s1 = q.sample(batch_n=1)
    out["batch of one"] = _stored(f)
    out["log_prob, batch of one"] = q.get_log_prob(s1, compute_jacobian=True)
    return out


def prog_transformed_sample_without_compute_jacobian() -> Any:
    import torch
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow

    f = FlowList([PlanarFlow(2), PlanarFlow(2)])
    q = TransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2]),
                                f, var=["z"])
    q.sample(batch_n=3)
    before = _stored(f)
    s = q.sample(batch_n=5, compute_jacobian=False)
    return {"before": before, "after": _stored(f), "z": s["z"]}


def prog_inverse_transformed_on_images() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import ActNorm2d, AffineCoupling, ChannelConv, FlowList, Squeeze, Unsqueeze

    class Net(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, 2 * c, 3, padding=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.conv(x)
            return torch.tanh(h[:, :h.shape[1] // 2]), h[:, h.shape[1] // 2:]

    f = FlowList([ActNorm2d(2), ChannelConv(2), AffineCoupling(2, mask_type="checkerboard", scale_translate_net=Net(2)),
                  Squeeze(), ChannelConv(8, decomposed=True), Unsqueeze()])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 4, 4])
    p = InverseTransformedDistribution(prior, f, var=["x"])
    out = {"log_prob": p.get_log_prob({"x": torch.randn(3, 2, 4, 4)}), "stored": _stored(f)}
    s = p.sample(batch_n=2)
    out["after sample"] = _stored(f)
    out["log_prob of the draw"] = p.get_log_prob(s)
    out["after scoring the draw"] = _stored(f)
    out["inference"] = p.inference({"x": torch.randn(5, 2, 4, 4)})["z"]
    out["after inference"] = _stored(f)
    return out


def prog_flow_list_forward_without_compute_jacobian() -> Any:
    import torch
    from pixyz.flows import Flatten, FlowList, Preprocess, Reverse

    f = FlowList([Preprocess(), Flatten(), Reverse(16)])
    x = torch.rand(3, 1, 4, 4)
    z = f(x, compute_jacobian=False)
    out = {"z": z, "without": _stored(f)}
    f(x)
    out["with"] = [(name, shape) for name, shape, _ in _stored(f)]  # (Pixyz's Preprocess log-det is off by a constant)
    return out


def prog_conditional_inverse_transformed() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, FlowList

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.fc(torch.cat([x, y], -1))
            return h[:, :2], h[:, 2:]

    f = FlowList([AffineCoupling(2, scale_translate_net=Net())])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    p = InverseTransformedDistribution(prior, f, var=["x"], cond_var=["y"])
    y = torch.randn(3, 1)
    out = {"log_prob": p.get_log_prob({"x": torch.randn(3, 2), "y": y}), "stored": _stored(f),
           "dist": p.logdet_jacobian}
    s = p.sample({"y": y}, batch_n=3)
    out["after sample"] = _stored(f)
    out["log_prob of the draw"] = p.get_log_prob(s)
    out["after scoring the draw"] = _stored(f)
    p.inverse(torch.randn(3, 2), y=y)
    out["after inverse"] = _stored(f)
    return out


def _user_scale(calls: list[str]) -> type:
    import torch
    from torch import nn
    from pixyz.flows import Flow

    class Scale(Flow):
        def __init__(self, in_features: int) -> None:
            super().__init__(in_features)
            self.s = nn.Parameter(torch.tensor(0.3))

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                    compute_jacobian: bool = True) -> torch.Tensor:
            calls.append("f")
            if compute_jacobian:
                self._logdet_jacobian = self.s * x.shape[-1] * torch.ones(x.shape[0])
            return x * self.s.exp()

        def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            calls.append("i")
            return z * (-self.s).exp()

    return Scale


def prog_a_user_flow_drawn_through_its_inverse() -> Any:
    import torch
    from pixyz.distributions import InverseTransformedDistribution, Normal

    calls: list[str] = []
    f = _user_scale(calls)(2)
    p = InverseTransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"],
                                              features_shape=[2]), f, var=["x"])
    out: dict[str, Any] = {}
    s = p.sample(batch_n=3)
    out["calls to draw"], out["stored after the draw"] = "".join(calls), f.logdet_jacobian
    out["log_prob"] = p.get_log_prob(s)
    out["calls to score"], out["stored"] = "".join(calls), p.logdet_jacobian
    out["log_prob of data"] = p.get_log_prob({"x": torch.randn(4, 2)})
    out["calls to score data"], out["stored after data"] = "".join(calls), p.logdet_jacobian
    return out


def prog_user_flows_in_a_flow_list_drawn_through_its_inverse() -> Any:
    import torch
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import FlowList, Reverse

    calls: list[str] = []
    scale = _user_scale(calls)
    f = FlowList([scale(2), Reverse(2), scale(2)])
    p = InverseTransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"],
                                              features_shape=[2]), f, var=["x"])
    out: dict[str, Any] = {}
    s = p.sample(batch_n=3)
    out["calls to draw"], out["after the draw"] = "".join(calls), _stored(f)
    out["log_prob"] = p.get_log_prob(s)
    out["calls to score"], out["after scoring"] = "".join(calls), _stored(f)
    return out


def prog_a_user_flow_without_a_forward_draws() -> Any:
    import torch
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import Flow

    class Generator(Flow):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                    compute_jacobian: bool = True) -> torch.Tensor:
            raise NotImplementedError()

        def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return 3 * z

    p = InverseTransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"],
                                              features_shape=[2]), Generator(2), var=["x"])
    s = p.sample(batch_n=3)
    return {"sample": s, "stored": p.logdet_jacobian}


def prog_a_user_flow_in_a_transformed_distribution() -> Any:
    import torch
    from pixyz.distributions import Normal, TransformedDistribution

    calls: list[str] = []
    f = _user_scale(calls)(2)
    q = TransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2]),
                                f, var=["z"])
    out: dict[str, Any] = {}
    s = q.sample(batch_n=3)
    out["calls to draw"], out["stored"] = "".join(calls), f.logdet_jacobian
    out["log_prob"] = q.get_log_prob(s)
    out["calls to score"] = "".join(calls)
    s = q.sample(batch_n=2)
    out["log_prob with compute_jacobian"] = q.get_log_prob(s, compute_jacobian=True)
    out["calls to score with compute_jacobian"], out["stored after"] = "".join(calls), f.logdet_jacobian
    q.sample(batch_n=5, compute_jacobian=False)
    out["calls to draw without"], out["stored after a draw without"] = "".join(calls), f.logdet_jacobian
    return out


def prog_planar_flow_batch_of_one() -> Any:
    import torch
    from pixyz.flows import AffineCoupling, BatchNorm1d, FlowList, PlanarFlow, Reverse

    x = torch.randn(1, 3)
    alone = PlanarFlow(3)
    alone(x)
    planar = FlowList([PlanarFlow(3), Reverse(3), PlanarFlow(3), BatchNorm1d(3).eval()])
    planar(x)
    mixed = FlowList([PlanarFlow(3), AffineCoupling(3, scale_translate_net=lambda v: (v, v))])
    mixed(x)
    return {"alone": _stored(alone), "planar": _stored(planar), "mixed": _stored(mixed)}


def prog_inverse_after_eval_of_a_batch_norm() -> Any:
    # inverting the very tensor a training-mode forward returned, after eval(): the running statistics apply
    import torch
    from pixyz.flows import BatchNorm1d

    v = torch.randn(3, 4)
    bn = BatchNorm1d(4, momentum=0.5)
    z = bn(v)
    bn.eval()
    return {"same_tensor": bn.inverse(z), "a_copy": bn.inverse(z.clone()), "forward_again": bn(v)}


def prog_inverse_after_eval_of_a_coupling_with_a_resnet() -> Any:
    # the Real NVP notebook's layer: its scale/translate ResNet holds batch norms, so eval() changes the map
    import torch
    from pixyz.flows import AffineCoupling
    from pixyz.layers import ResNet

    class ST(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.r = ResNet(2, 4, 4, num_blocks=1, kernel_size=3, padding=1, double_after_norm=False)

        def forward(self, x):  # type: ignore[no-untyped-def]
            s, t = torch.chunk(self.r(x), 2, dim=1)
            return torch.tanh(s), t

    f = AffineCoupling(2, mask_type="checkerboard", scale_translate_net=ST())
    x = torch.randn(4, 2, 4, 4) * 3 + 1
    z = f(x)
    f.eval()
    back = f.inverse(z)
    f.train()
    return {"same_tensor": back, "train_again": f.inverse(z), "a_copy": f.inverse(z.clone())}


PROGRAMS = [prog_transformed_get_log_prob_with_compute_jacobian,
            prog_transformed_get_log_prob_with_a_training_batch_norm,
            prog_planar_flows_scored_with_compute_jacobian,
            prog_transformed_sample_without_compute_jacobian,
            prog_inverse_transformed_on_images,
            prog_flow_list_forward_without_compute_jacobian,
            prog_conditional_inverse_transformed,
            prog_a_user_flow_drawn_through_its_inverse,
            prog_user_flows_in_a_flow_list_drawn_through_its_inverse,
            prog_a_user_flow_without_a_forward_draws,
            prog_a_user_flow_in_a_transformed_distribution,
            prog_planar_flow_batch_of_one,
            prog_inverse_after_eval_of_a_batch_norm,
            prog_inverse_after_eval_of_a_coupling_with_a_resnet]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__[5:])
def test_same_as_pixyz(program: Callable[[], Any]) -> None:
    # absolute tolerance 1e-5: an image flow's log-det is a float32 sum of hundreds of terms (here 2x4x4 pixels times
    # up to 8 channels) added in another order than Pixyz's; a log-det that should be 0 (an orthogonal 1x1 conv at
    # initialization) came out as 4.8e-7 in one and -7.2e-7 in the other on one CPU
    assert_same(*run_both(program), atol=1e-5)
