"""Flows and flow distributions under Pixyz programs: each program runs under pixyz 0.3.3 and under pyro_dgm (import
renamed) from the same seed, so both build the same initial weights, draw the same noise and see the same inputs.

Where Pixyz is wrong we keep the correct value, and the test shows both and why (autograd Jacobians, invertibility):

- ``Preprocess``'s log-determinant: the map is
  :math:`x \\mapsto \\mathrm{logit}(\\alpha/2 + (1-\\alpha)(255x + u)/256)`; Pixyz leaves out the factor
  :math:`255/256` of the first step, so ours is :math:`D\\log(255/256)` lower (D values per sample). Programs that
  contain it are compared after adding that constant (the gradients are the same, so training trajectories agree).
- ``Preprocess.inverse``: Pixyz returns :math:`\\sigma(z)`, which undoes only the logit; ours undoes the whole map.
- ``PlanarFlow(constraint_u=True)``: Pixyz divides by :math:`\\|w\\|` instead of :math:`\\|w\\|^2`, so
  :math:`w^\\top\\hat u \\ge -1` (invertibility) does not hold.
- ``BatchNorm2d``: Pixyz's log-determinant is a ``(C, H)`` tensor, not one value per image.
- ``TransformedDistribution.get_log_prob`` of values it did not just sample: Pixyz's default (compute_jacobian=False)
  subtracts the log-determinant stored by the last forward call, not the one at these values.

Tolerances: float32 programs; values are sums of up to ~200 terms of size ~1, so they agree to ~1e-5 relative, and the
harness's default ``rtol=1e-5, atol=1e-6`` is used unless a comment says otherwise. Where the orders of float
operations differ (ChannelConv's inverse, the triangular solves of the LU form, Preprocess's logit), ``atol=1e-4``
bounds float32 rounding of values of size ~10-100.
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pixyz_harness import assert_same, raises_same, run_both, run_pixyz, run_pyro_dgm

LOG_255_256 = math.log(255 / 256)  # the per-pixel term Pixyz's Preprocess leaves out of its log-determinant


# ---------------------------------------------------------------------------------------------- programs' networks
def _vector_st_net(d: int, hidden: int = 16):
    """A scale-translate network for vectors, as Pixyz's Real NVP notebook writes it."""
    from torch import nn

    class ScaleTranslateNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.log_s = nn.Linear(hidden, d)
            self.t = nn.Linear(hidden, d)

        def forward(self, x):
            h = self.layers(x)
            return torch.tanh(self.log_s(h)), self.t(h)

    return ScaleTranslateNet()


def _conv_st_net(c: int):
    from torch import nn

    class ScaleTranslateNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, 2 * c, 3, padding=1)

        def forward(self, x):
            log_s, t = torch.chunk(self.conv(x), 2, dim=1)
            return torch.tanh(log_s), t

    return ScaleTranslateNet()


# ---------------------------------------------------------------------------------------------- Real NVP, vectors
def realnvp_vectors():
    """Pixyz's Real NVP on flat MNIST-like vectors: Preprocess, couplings, BatchNorm1d, Shuffle, Reverse; ML."""
    from torch import optim
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, BatchNorm1d, FlowList, Preprocess, Reverse, Shuffle
    from pixyz.models import ML

    d = 16
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[d], name="p_prior")
    flows = [Preprocess()]
    for i in range(2):
        flows += [AffineCoupling(in_features=d, mask_type="channel_wise", scale_translate_net=_vector_st_net(d),
                                 inverse_mask=(i % 2 != 0)), BatchNorm1d(d), Shuffle(d) if i == 0 else Reverse(d)]
    f = FlowList(flows)
    p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
    x = torch.randint(0, 256, (8, d)) / 255.
    out = {"text": str(p), "features_shape": p.features_shape, "flow_output_var": p.flow_output_var,
           "log_prob": p.get_log_prob({"x": x}), "logdet": f.logdet_jacobian}
    # SGD, not Adam: a bias feeding a batch norm has a zero gradient up to float rounding, which Adam would scale up
    # to a full step in a direction set by rounding (the loss does not see it, the running statistics do)
    model = ML(p, optimizer=optim.SGD, optimizer_params={"lr": 1e-2})
    out["losses"] = [model.train({"x": x}).item() for _ in range(3)]
    out["test_loss"] = float(model.test({"x": x}))
    p.eval()
    out["eval_log_prob"] = p.get_log_prob({"x": x})
    s = p.sample(batch_n=3)
    out["sample_keys"] = sorted(s)
    out["sample_shapes"] = {k: v.shape for k, v in s.items()}
    out["hidden"] = s["z"]
    out["sample"] = s["x"]
    return out


def _pixels_of(pixyz_sample: torch.Tensor) -> torch.Tensor:
    """What our Preprocess.inverse gives where Pixyz's gives ``pixyz_sample`` = sigmoid(w): the exact inverse of
    x -> logit(0.025 + 0.95 (255 x + u) / 256), rounded to the pixel level."""
    return torch.floor((pixyz_sample - 0.025) / 0.95 * 256).clamp(0, 255) / 255


def test_realnvp_on_vectors_matches_pixyz_up_to_the_preprocess_constant() -> None:
    ref, ours = run_both(realnvp_vectors)
    d = 16
    for k in ("log_prob", "eval_log_prob"):
        assert_same(ref[k] + d * LOG_255_256, ours[k], atol=1e-4)
    assert_same(ref["logdet"] + d * LOG_255_256, ours["logdet"], atol=1e-4)
    # the loss is -mean log p(x): it moves by the same constant, the gradients (so the trajectory) do not
    assert_same([v - d * LOG_255_256 for v in ref["losses"]], ours["losses"], atol=1e-4)
    assert ours["test_loss"] == pytest.approx(ref["test_loss"] - d * LOG_255_256, abs=1e-4)
    for k in ("text", "features_shape", "flow_output_var", "sample_keys", "sample_shapes", "hidden"):
        assert_same(ref[k], ours[k])
    assert_same(_pixels_of(ref["sample"]), ours["sample"])


# ---------------------------------------------------------------------------------------------- Real NVP, images
def realnvp_images():
    """Pixyz's Real NVP on CIFAR-like images: checkerboard and channel-wise couplings with Pixyz's ResNet, Squeeze,
    Unsqueeze, Preprocess; trained with Model(-LogProb(p).mean())."""
    from torch import nn, optim
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, FlowList, Preprocess, Squeeze, Unsqueeze
    from pixyz.layers import ResNet
    from pixyz.losses import LogProb
    from pixyz.models import Model

    class ScaleTranslateNet(nn.Module):
        def __init__(self, in_channels: int, mid_channels: int) -> None:
            super().__init__()
            self.resnet = ResNet(in_channels=in_channels, mid_channels=mid_channels, out_channels=in_channels * 2,
                                 num_blocks=1, kernel_size=3, padding=1, double_after_norm=True)

        def forward(self, x):
            log_s, t = torch.chunk(self.resnet(x), 2, dim=1)
            return torch.tanh(log_s), t

    c = 3
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[c, 8, 8],
                   name="p_prior")
    flows = [Preprocess()]
    for j in range(2):
        flows.append(AffineCoupling(in_features=c, mask_type="checkerboard",
                                    scale_translate_net=ScaleTranslateNet(c, 4), inverse_mask=(j % 2 == 1)))
    flows.append(Squeeze())
    for j in range(2):
        flows.append(AffineCoupling(in_features=c * 4, mask_type="channel_wise",
                                    scale_translate_net=ScaleTranslateNet(c * 4, 4), inverse_mask=(j % 2 == 1)))
    flows.append(Unsqueeze())
    f = FlowList(flows)
    p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"], name="p")
    x = torch.randint(0, 256, (4, c, 8, 8)) / 255.
    loss = -LogProb(p).mean()
    model = Model(loss=loss, distributions=[p], optimizer=optim.SGD, optimizer_params={"lr": 1e-3})  # not Adam: see
    # realnvp_vectors (the ResNet's convolution biases feed batch norms)
    out = {"text": str(p), "loss_text": str(loss), "log_prob": p.get_log_prob({"x": x}),
           "losses": [model.train({"x": x}).item() for _ in range(2)], "masks": [
               f.flow_list[1].build_mask(x), f.flow_list[4].build_mask(torch.zeros(4, 4 * c, 4, 4))]}
    p.eval()
    with torch.no_grad():
        out["eval_log_prob"] = p.get_log_prob({"x": x})
        s = p.sample(batch_n=2)
    out["hidden"] = s["z"]
    out["sample"] = s["x"]
    return out


def test_realnvp_on_images_matches_pixyz_up_to_the_preprocess_constant() -> None:
    ref, ours = run_both(realnvp_images)
    d = 3 * 8 * 8
    for k in ("log_prob", "eval_log_prob"):
        assert_same(ref[k] + d * LOG_255_256, ours[k], atol=1e-3)  # sums of 192 terms of size ~1-10 in float32
    assert_same([v - d * LOG_255_256 for v in ref["losses"]], ours["losses"], rtol=1e-5, atol=1e-3)
    for k in ("text", "loss_text", "masks", "hidden"):
        assert_same(ref[k], ours[k])
    # samples: Pixyz's Preprocess.inverse is sigmoid(z) (pixels squashed into [alpha/2, 1 - alpha/2]); ours undoes
    # the squash too and rounds to the pixel level
    assert_same(_pixels_of(ref["sample"]), ours["sample"])


# ---------------------------------------------------------------------------------------------- conditional Real NVP
def conditional_realnvp():
    from torch import nn, optim
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, BatchNorm1d, FlowList, Shuffle
    from pixyz.models import ML

    d, dy = 6, 3

    class ScaleTranslateNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(d + dy, 16), nn.ReLU())
            self.log_s = nn.Linear(16, d)
            self.t = nn.Linear(16, d)

        def forward(self, x, y):
            h = self.layers(torch.cat([x, y], dim=1))
            return torch.tanh(self.log_s(h)), self.t(h)

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[d], name="p_prior")
    flows = []
    for i in range(3):
        flows += [AffineCoupling(in_features=d, scale_translate_net=ScaleTranslateNet(), inverse_mask=(i % 2 == 1)),
                  BatchNorm1d(d), Shuffle(d)]
    f = FlowList(flows)
    p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"], cond_var=["y"], name="p")
    x, y = torch.randn(8, d), torch.randn(8, dy)
    out = {"text": str(p), "log_prob": p.get_log_prob({"x": x, "y": y})}
    model = ML(p, optimizer=optim.SGD, optimizer_params={"lr": 1e-2})  # not Adam: see realnvp_vectors
    out["losses"] = [model.train({"x": x, "y": y}).item() for _ in range(3)]
    p.eval()
    z = p.inference({"x": x, "y": y})
    out["inference"] = z
    out["round_trip"] = p.inverse(p.forward(x, y=y, compute_jacobian=True), y=y)
    out["forward_logdet"] = p.logdet_jacobian
    s = p.sample({"y": y[:4]}, batch_n=4)
    out["sample"] = s
    out["sample_no_hidden"] = sorted(p.sample({"y": y[:4]}, batch_n=4, return_hidden=False))
    out["sample_not_all"] = sorted(p.sample({"y": y[:4]}, batch_n=4, return_all=False))
    return out


def test_conditional_realnvp_matches_pixyz() -> None:
    ref, ours = run_both(conditional_realnvp)
    assert_same(ref, ours, atol=1e-5)


# ---------------------------------------------------------------------------------------------- Glow
def glow(decomposed: bool):
    from torch import optim
    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import ActNorm2d, AffineCoupling, ChannelConv, FlowList, Preprocess, Squeeze, Unsqueeze
    from pixyz.losses import LogProb
    from pixyz.models import Model

    c = 3
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[c, 8, 8],
                   name="p_prior")
    flows = [Preprocess(), Squeeze()]
    for i in range(2):
        flows += [ActNorm2d(4 * c), ChannelConv(4 * c, decomposed=decomposed),
                  AffineCoupling(4 * c, scale_translate_net=_conv_st_net(4 * c), inverse_mask=(i % 2 == 1))]
    flows.append(Unsqueeze())
    f = FlowList(flows)
    p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
    x = torch.randint(0, 256, (4, c, 8, 8)) / 255.
    model = Model(loss=-LogProb(p).mean(), distributions=[p], optimizer=optim.Adam,
                  optimizer_params={"lr": 1e-3})
    out = {"text": str(p), "log_prob": p.get_log_prob({"x": x}),
           "losses": [model.train({"x": x}).item() for _ in range(2)],
           "actnorm": (f.flow_list[2].bias.detach().clone(), f.flow_list[2].logs.detach().clone()),
           "state_keys": sorted(f.state_dict())}
    p.eval()
    with torch.no_grad():
        out["eval_log_prob"] = p.get_log_prob({"x": x})
        z = prior.sample(batch_n=2)["z"]
        out["inverse_without_preprocess"] = FlowList(flows[1:]).inverse(z)
        out["inverse"] = f.inverse(z)
    return out


@pytest.mark.parametrize("decomposed", [False, True])
def test_glow_matches_pixyz_up_to_the_preprocess_constant(decomposed: bool) -> None:
    def program():
        return glow(decomposed)

    ref, ours = run_both(program)
    d = 3 * 8 * 8
    for k in ("log_prob", "eval_log_prob"):
        assert_same(ref[k] + d * LOG_255_256, ours[k], atol=1e-3)  # 192-term sums in float32
    assert_same([v - d * LOG_255_256 for v in ref["losses"]], ours["losses"], atol=1e-3)
    assert_same(ref["actnorm"], ours["actnorm"], atol=1e-5)
    assert_same(ref["text"], ours["text"])
    # our ActNorm2d also saves whether it has been initialized (so a reloaded model does not re-initialize and
    # overwrite its trained values, as Pixyz's does); a state dict without it (Pixyz's) loads as initialized
    assert_same(ref["state_keys"], [k for k in ours["state_keys"] if not k.endswith(".initialized")])
    assert_same(ref["inverse_without_preprocess"], ours["inverse_without_preprocess"], atol=1e-4)
    # the last step of the inverse: Pixyz's sigmoid(w) undoes only the logit; ours undoes alpha's squash too and
    # rounds to the pixel level
    w = ref["inverse_without_preprocess"]
    assert_same(ref["inverse"], torch.sigmoid(w))
    assert_same(ours["inverse"], _pixels_of(torch.sigmoid(w)))


# ---------------------------------------------------------------------------------------------- planar flows, VI
def planar_vi():
    from torch import optim
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="q_0")
    f = FlowList([PlanarFlow(2) for _ in range(4)])
    q = TransformedDistribution(prior=prior, flow=f, var=["z"], name="q")
    target = Normal(loc=torch.tensor([1.0, -1.0]), scale=torch.tensor([0.5, 2.0]), var=["z"], name="p")
    opt = optim.Adam(q.parameters(), lr=1e-2)
    out = {"text": str(q), "prob_text": q.prob_factorized_text, "flow_input_var": q.flow_input_var,
           "features_shape": q.features_shape, "losses": []}
    for _ in range(4):
        s = q.sample(batch_n=16)
        loss = (q.get_log_prob(s) - target.get_log_prob(s)).mean()  # KL(q || p) by Monte Carlo
        opt.zero_grad()
        loss.backward()
        opt.step()
        out["losses"].append(loss.detach())
    s = q.sample(batch_n=3, return_all=False)
    out["sample"] = s
    out["logdet"] = q.logdet_jacobian
    out["log_prob"] = q.get_log_prob(s)
    out["flow_params"] = [p.detach().clone() for p in f.parameters()]
    return out


def test_planar_flow_vi_matches_pixyz() -> None:
    ref, ours = run_both(planar_vi)
    assert_same(ref, ours)


def planar_vi_with_elbo():
    from torch import optim
    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow
    from pixyz.losses import ELBO
    from pixyz.models import Model

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="q_0")
    q = TransformedDistribution(prior=prior, flow=FlowList([PlanarFlow(2) for _ in range(2)]), var=["z"], name="q")
    p = Normal(loc=torch.tensor([1.0, -1.0]), scale=torch.tensor([0.5, 2.0]), var=["z"], name="p")
    loss = -ELBO(p, q).mean()
    model = Model(loss=loss, distributions=[q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    return {"loss_text": str(loss), "losses": [model.train({}).item() for _ in range(3)]}


def test_planar_flow_vi_with_elbo_and_model_matches_pixyz() -> None:
    ref, ours = run_both(planar_vi_with_elbo)
    assert_same(ref, ours)


def test_planar_constraint_pixyz_does_not_keep_the_flow_invertible() -> None:
    """constraint_u=True should give w.u_hat >= -1 (then f is monotone along w, hence invertible). With w = (0.1, 0)
    and u = (-30, 0): Pixyz's u_hat = u + (m(wu) - wu) w/|w| gives w.u_hat = -2.80, so at w.x + b = 0 the Jacobian
    determinant 1 + w.u_hat is negative (and positive far away): f folds the line. Ours divides by |w|^2:
    w.u_hat = m(wu) = -1 + softplus(-3) = -0.951."""
    def program():
        from pixyz.flows import PlanarFlow

        f = PlanarFlow(2, constraint_u=True)
        with torch.no_grad():
            f.w.copy_(torch.tensor([[0.1, 0.0]]))
            f.u.copy_(torch.tensor([[-30.0, 0.0]]))
            f.b.zero_()
        x = torch.tensor([[0.0, 0.0], [100.0, 0.0]])  # w.x + b = 0 and = 10
        z = f.forward(x)
        return z, f.logdet_jacobian, _autograd_logdet(lambda v: f.forward(v, compute_jacobian=False), x)

    (z_ref, ld_ref, auto_ref), (z_ours, ld_ours, auto_ours) = run_both(program)
    # each log-det is right for its own map (autograd; Pixyz and we add epsilon() = 1e-7 inside the log)
    assert_same(ld_ref, auto_ref, atol=1e-5)
    assert_same(ld_ours, auto_ours, atol=1e-5)
    wu_ref, wu_ours = 0.1 * (-30 + (-1 + math.log1p(math.exp(-3.0)) + 3.0)), -1 + math.log1p(math.exp(-3.0))
    assert wu_ref == pytest.approx(-2.795, abs=1e-3) and wu_ours == pytest.approx(-0.951, abs=1e-3)
    # both store log|det| of their own map: log|1 + w.u_hat| at w.x + b = 0, log 1 = 0 far away
    assert ld_ref[0].item() == pytest.approx(math.log(abs(1 + wu_ref)), abs=1e-5)
    assert ld_ours[0].item() == pytest.approx(math.log(1 + wu_ours), abs=1e-5)
    # Pixyz's det changes sign between the two points (not invertible); ours stays positive
    assert 1 + wu_ref < 0 < 1 + wu_ours
    # with the default constraint_u=False both are the same map
    assert_same(*run_both(lambda: _planar_unconstrained()))


def _planar_unconstrained():
    from pixyz.flows import PlanarFlow

    f = PlanarFlow(3)
    x = torch.randn(5, 3)
    return f.forward(x), f.logdet_jacobian, repr(f)


# ---------------------------------------------------------------------------------------------- single flows
def single_flows():
    """Every flow on its own: forward, logdet_jacobian (as Pixyz stores it), inverse, repr, parameters."""
    import numpy as np
    from pixyz.flows import (ActNorm2d, AffineCoupling, BatchNorm1d, ChannelConv, Flatten, Flow, FlowList,
                             Permutation, Reverse, Shuffle, Squeeze, Unsqueeze)

    img = torch.randn(2, 4, 4, 4)
    vec = torch.randn(5, 6)
    out = {}
    flows = {
        "squeeze": (Squeeze(), img), "unsqueeze": (Unsqueeze(), img),
        "permutation-image": (Permutation([0, 3, 1, 2]), img), "shuffle-image": (Shuffle(4), img),
        "reverse-vector": (Reverse(6), vec), "shuffle-vector": (Shuffle(6), vec),
        "actnorm": (ActNorm2d(4, scale=2.0), img), "conv": (ChannelConv(4), img),
        "conv-lu": (ChannelConv(4, decomposed=True), img), "batchnorm1d": (BatchNorm1d(6, momentum=0.3), vec),
        "coupling-image-checkerboard": (AffineCoupling(4, mask_type="checkerboard",
                                                       scale_translate_net=_conv_st_net(4)), img),
        "coupling-image-odd": (AffineCoupling(3, scale_translate_net=_conv_st_net(4), inverse_mask=True), img),
        "coupling-vector-odd": (AffineCoupling(5, scale_net=torch.nn.Linear(6, 6), translate_net=torch.nn.Linear(6, 6),
                                               inverse_mask=False), vec),
        "identity": (Flow(6), vec),
        "numpy-in-features": (AffineCoupling(np.prod([2, 3]), scale_translate_net=_vector_st_net(6)), vec),
        "flowlist-volume-preserving": (FlowList([Squeeze(), Shuffle(16), Unsqueeze()]), img),
    }
    for name, (f, x) in flows.items():
        before = f.logdet_jacobian
        z = f(x)
        out[name] = {"before": before, "z": z, "logdet": f.logdet_jacobian, "x": f.inverse(z), "repr": repr(f),
                     "in_features": f.in_features, "state": dict(f.state_dict())}
    out["conv-get_parameters"] = [flows[k][0].get_parameters(img, inverse) for k in ("conv", "conv-lu")
                                  for inverse in (False, True)]
    fl = Flatten()
    z = fl(img)
    out["flatten"] = {"z": z, "x": fl.inverse(z), "logdet": fl.logdet_jacobian, "repr": repr(fl)}
    fl = Flatten((4, 16))  # a shape forward() replaces with its input's (we refused it when it was built)
    z = fl(img)
    out["flatten-in_size"] = {"z": z, "x": fl.inverse(z), "in_size": tuple(fl.in_size)}
    bn = flows["batchnorm1d"][0]
    out["batchnorm1d-running"] = (bn.running_mean, bn.running_var)
    bn.eval()
    out["batchnorm1d-eval"] = (bn(vec * 2), bn.logdet_jacobian)
    return out


def _drop_our_extra_buffers(result: dict) -> dict:
    """Our permutations keep their indices in the state dict (so a saved Shuffle reloads with its permutation), and
    ActNorm2d whether it was initialized; Pixyz's do not."""
    for v in result.values():
        if isinstance(v, dict) and "state" in v:
            v["state"] = {k: t for k, t in v["state"].items()
                          if "permute_indices" not in k and not k.endswith("initialized")}
    return result


def test_single_flows_match_pixyz() -> None:
    ref, ours = run_both(single_flows)
    # the base class is the identity; Pixyz's forward stores no log-det (None, so it fails inside a FlowList), ours
    # stores its log-det, zeros
    assert ref["identity"].pop("logdet") is None
    assert torch.equal(ours["identity"].pop("logdet"), torch.zeros(5))
    assert_same(ref, _drop_our_extra_buffers(ours), atol=1e-5)


def test_pixyz_style_flow_subclass_in_a_distribution() -> None:
    """A flow written for Pixyz (overriding forward/inverse, storing _logdet_jacobian) works inside our FlowList and
    InverseTransformedDistribution."""
    def program():
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flow, FlowList, Squeeze, Unsqueeze

        class ChannelScale(Flow):
            def __init__(self, in_features):
                super().__init__(in_features)
                self.log_scale = nn.Parameter(torch.randn(1, in_features, 1, 1) * 0.1)

            def forward(self, x, y=None, compute_jacobian=True):
                if compute_jacobian:
                    self._logdet_jacobian = self.log_scale.sum() * x.shape[2] * x.shape[3] * torch.ones(x.shape[0])
                return x * self.log_scale.exp()

            def inverse(self, z, y=None):
                return z * (-self.log_scale).exp()

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 4, 4])
        f = FlowList([Squeeze(), ChannelScale(8), Unsqueeze()])
        p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
        x = torch.randn(3, 2, 4, 4)
        return {"log_prob": p.get_log_prob({"x": x}), "sample": p.sample(batch_n=2), "text": str(p)}

    assert_same(*run_both(program))


# ---------------------------------------------------------------------------------------------- where Pixyz is wrong
def _autograd_logdet(f, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """log|det J| of ``f`` at each row of ``x`` from autograd (re-seeding before each call when ``f`` draws noise)."""
    out = []
    for i in range(x.shape[0]):
        def g(v, i=i):
            if seed is not None:
                torch.manual_seed(seed)
            return f(v.reshape(1, *x.shape[1:])).reshape(-1)

        if seed is not None:
            torch.manual_seed(seed)
        out.append(torch.linalg.slogdet(torch.autograd.functional.jacobian(g, x[i].reshape(-1)))[1])
    return torch.stack(out)


def test_preprocess_logdet_pixyz_leaves_out_255_over_256() -> None:
    """Preprocess's log-det from autograd (same noise): ours equals it, Pixyz's is D log(256/255) too high. One row
    at a time with the same seed, so the noise u is the same in the map and in the flow's own computation."""
    def program():
        from pixyz.flows import Preprocess

        f = Preprocess().double()
        x = torch.randint(0, 256, (1, 6), dtype=torch.float64) / 255
        torch.manual_seed(7)
        z = f.forward(x)
        stored = f.logdet_jacobian
        auto = _autograd_logdet(lambda v: f.forward(v, compute_jacobian=False), x, seed=7)
        return z, stored, auto, f.inverse(z), x

    (z_r, ld_r, auto_r, inv_r, x), (z_o, ld_o, auto_o, inv_o, _) = run_both(program)
    assert_same(z_r, z_o, atol=1e-12)  # the same map (float64)
    assert_same(auto_r, auto_o, atol=1e-10)
    assert_same(ld_o, auto_o, atol=1e-10)  # ours is the map's log-determinant
    assert_same(ld_r + 6 * LOG_255_256, auto_r, atol=1e-10)  # Pixyz's misses 6 log(255/256)
    assert_same(inv_o, x, atol=1e-12)  # ours inverts the map (dequantization rounded off)
    assert (inv_r - x).abs().max() > 1e-3  # Pixyz's sigmoid(z) does not: alpha's squash and the noise u stay
    u = _noise(7, x)
    assert_same(inv_r, 0.025 + 0.95 * (x * 255 + u) / 256, atol=1e-10)


def _noise(seed: int, like: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand_like(like)


def test_batchnorm2d_pixyz_logdet_is_not_one_value_per_image() -> None:
    """Pixyz's BatchNorm2d in training normalizes each (channel, pixel) by its batch statistics and returns a log-det
    of shape (C, H); ours normalizes per channel and returns (N,), equal to the autograd log-det in eval mode."""
    def program():
        from pixyz.flows import BatchNorm2d

        f = BatchNorm2d(2)
        x = torch.randn(5, 2, 3, 3) * 2 + 1
        z = f(x)
        return z, f.logdet_jacobian

    (z_r, ld_r), (z_o, ld_o) = run_both(program)
    assert ld_r.shape == (2, 3)  # (C, H): not a log-density term
    assert ld_o.shape == ()  # one number for the batch, stored unexpanded like Pixyz's BatchNorm1d
    assert torch.allclose(z_o.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)  # per-channel statistics
    assert torch.allclose(z_r.mean(dim=0), torch.zeros(2, 3, 3), atol=1e-5)  # Pixyz: per (channel, pixel)

    def eval_program():
        from pixyz.flows import BatchNorm2d

        f = BatchNorm2d(2).double()
        f(torch.randn(16, 2, 3, 3, dtype=torch.float64) * 2 + 1)
        f.eval()
        x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
        f(x)
        return f.logdet_jacobian, _autograd_logdet(lambda v: f(v), x)

    ld, auto = run_pyro_dgm(eval_program)
    assert_same(ld.expand(2), auto, atol=1e-10)
    # Pixyz's eval map (per-pixel running statistics): its (C, H) log-det is right only once summed, and as it is
    # returned it broadcasts against a batch of log-densities instead of adding to each
    ld, auto = run_pixyz(eval_program)
    assert ld.shape == (2, 3)
    assert_same(ld.sum().expand(2), auto, atol=1e-10)


def test_flow_without_inverse_scores_its_own_samples() -> None:
    """Pixyz's PlanarFlow has no inverse: a TransformedDistribution scores the values it just sampled (from the
    flow's memory); keys of samples with and without return_all."""
    def program():
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import PlanarFlow

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
        q = TransformedDistribution(prior=prior, flow=PlanarFlow(2), var=["z"])
        s = q.sample(batch_n=4)
        return q.get_log_prob(s), sorted(s), q.sample(batch_n=4, return_all=False).keys()

    ref, ours = run_both(program)
    assert_same(ref[0], ours[0])
    assert ref[1] == ours[1] and sorted(ref[2]) == sorted(ours[2])


def test_state_dict_saved_by_pixyz_loads() -> None:
    """A Glow-like flow trained under Pixyz: its state dict (no ActNorm 'initialized', no permutation indices, the LU
    convolution's l/u/log_s) loads into ours, which then computes what Pixyz computes (no re-initialization)."""
    def build():
        from pixyz.flows import ActNorm2d, AffineCoupling, ChannelConv, FlowList, Shuffle

        torch.manual_seed(3)
        import numpy as np
        np.random.seed(3)
        return FlowList([ActNorm2d(4), ChannelConv(4, decomposed=True), Shuffle(4),
                         AffineCoupling(4, scale_translate_net=_conv_st_net(4))])

    def train():
        f = build()
        x = torch.randn(6, 4, 3, 3) * 3 + 1
        f(x)  # initializes ActNorm from this batch
        with torch.no_grad():
            for p in f.parameters():
                p.add_(0.1)
        return {k: v.clone() for k, v in f.state_dict().items()}

    def evaluate(state):
        def program():
            f = build()
            f.load_state_dict(state)
            if mark_initialized:
                f.flow_list[0].inited = True  # what a Pixyz user must do after loading
            x = torch.randn(2, 4, 3, 3) * 10  # re-initializes ActNorm from x if it thinks it has not been
            return f(x), f.logdet_jacobian, f.inverse(f(x)), f.flow_list[0].logs.detach().clone()
        return program

    state = run_pixyz(train)
    mark_initialized = True
    ref = run_pixyz(evaluate(state))
    ours = run_pyro_dgm(evaluate(state))
    assert_same(ref, ours, atol=1e-4)
    assert_same(ref[3], state["flow_list.0.logs"])  # the trained values are kept
    mark_initialized = False  # Pixyz forgets that it was initialized and overwrites the trained values; ours keeps them
    assert not torch.allclose(run_pixyz(evaluate(state))[3], state["flow_list.0.logs"])
    assert_same(run_pyro_dgm(evaluate(state)), ours)


def flow_distribution_api():
    """Texts, replace_var and log-probs of renamed flow distributions (Pixyz cannot put them in products: its
    products refuse a factor whose sample returns the prior's variable too)."""
    from torch import nn
    from pixyz.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
    from pixyz.flows import AffineCoupling, FlowList, PlanarFlow

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="q_0")
    q = TransformedDistribution(prior=prior, flow=FlowList([PlanarFlow(2), PlanarFlow(2)]), var=["z"], name="q")
    s = q.sample(batch_n=3)
    q2 = q.replace_var(z="w")
    out = {"q": [q.prob_text, q.prob_joint_factorized_and_text, q.has_reparam, q.input_var, q.distribution_name,
                 q.features_shape, q2.prob_joint_factorized_and_text], "q2_log_prob": q2.get_log_prob({"w": s["z"]})}

    class ScaleTranslateNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4 + 2, 8)

        def forward(self, x, y):
            s, t = self.lin(torch.cat([x, y], 1)).chunk(2, 1)
            return torch.tanh(s), t

    prior_z = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="p_prior")
    p = InverseTransformedDistribution(prior=prior_z, flow=FlowList([AffineCoupling(4, scale_translate_net=(
        ScaleTranslateNet()))]), var=["x"], cond_var=["y"])
    p2 = p.replace_var(x="a", y="b")
    a, b = torch.randn(3, 4), torch.randn(3, 2)
    out["p"] = [p.prob_joint_factorized_and_text, p.input_var, p.cond_var, p2.prob_joint_factorized_and_text]
    out["p2_log_prob"] = p2.get_log_prob({"a": a, "b": b})
    out["p_log_prob"] = p.get_log_prob({"x": a, "y": b})
    return out


def test_flow_distribution_api_matches_pixyz() -> None:
    assert_same(*run_both(flow_distribution_api))


def test_transformed_distribution_scores_data_with_its_own_log_det() -> None:
    """Scoring values that were not just sampled: with compute_jacobian=True Pixyz computes the log-det at f^{-1}(z)
    and agrees with ours; with its default compute_jacobian=False it subtracts whatever log-det the flow stored last
    (here the one of an earlier sample), which is not log|det| at these values. Ours always computes it."""
    def program():
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import AffineCoupling, FlowList, Reverse

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[4], name="q_0")
        f = FlowList([AffineCoupling(4, scale_translate_net=_vector_st_net(4)), Reverse(4),
                      AffineCoupling(4, scale_translate_net=_vector_st_net(4))])
        q = TransformedDistribution(prior=prior, flow=f, var=["z"], name="q")
        q.sample(batch_n=3)  # stores the log-det of these samples
        z = torch.randn(3, 4) * 2
        default = q.get_log_prob({"z": z})
        exact = q.get_log_prob({"z": z}, compute_jacobian=True)
        x = f.inverse(z)
        f.forward(x)
        by_hand = prior.get_log_prob({"x": x}) - f.logdet_jacobian
        return exact, default, by_hand

    (exact_r, default_r, hand_r), (exact_o, default_o, hand_o) = run_both(program)
    assert_same(exact_r, exact_o, atol=1e-5)
    assert_same(hand_r, exact_r, atol=1e-5)
    assert_same(default_o, exact_o, atol=1e-5)  # ours: the same with or without compute_jacobian
    assert (default_r - exact_r).abs().max() > 0.1  # Pixyz's default: a stale log-det


def test_nested_flow_lists_on_images() -> None:
    """FlowLists inside FlowLists, image flows deciding their event dims from the input (as Pixyz's do)."""
    def program():
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import ActNorm2d, AffineCoupling, ChannelConv, FlowList, Reverse, Squeeze, Unsqueeze

        step = FlowList([ActNorm2d(8), ChannelConv(8), Reverse(8),
                         AffineCoupling(8, mask_type="checkerboard", scale_translate_net=_conv_st_net(8))])
        f = FlowList([Squeeze(), FlowList([step, AffineCoupling(8, scale_translate_net=_conv_st_net(8))]),
                      Unsqueeze()])
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 4, 4])
        p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
        x = torch.randn(3, 2, 4, 4)
        lp = p.get_log_prob({"x": x})
        p.eval()
        s = p.sample(batch_n=2)
        return {"lp": lp, "logdet": f.logdet_jacobian, "sample": s, "round_trip": f.inverse(f.forward(x)),
                "text": str(p)}

    assert_same(*run_both(program), atol=1e-5)


def test_reparameterized_samples_of_a_transformed_distribution_carry_the_prior_gradient() -> None:
    """sample(reparam=True) of a TransformedDistribution: Pixyz does not pass reparam on to the prior, so the prior's
    parameters get no pathwise gradient and the ELBO gradient is wrong; ours passes it on.

    With an identity flow (planar, u = 0), q = q_0 = N(mu, 1) and target p = N(2, 1): KL(q || p) = (mu - 2)^2 / 2, so
    d/dmu = mu - 2 = -2 at mu = 0. The Monte Carlo estimate over N = 4000 draws has standard error 1/sqrt(N) = 0.016:
    ours is within 0.1 of -2, Pixyz's (only the score term, mean of the noise) within 0.1 of 0. Same seed, same draws.
    """
    def program():
        from torch import nn
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import PlanarFlow

        class Q0(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], name="q_0")
                self.mu = nn.Parameter(torch.zeros(1, 1))

            def forward(self):
                return {"loc": self.mu, "scale": torch.ones_like(self.mu)}

        q0 = Q0()
        f = PlanarFlow(1)
        with torch.no_grad():
            f.u.zero_()
        q = TransformedDistribution(prior=q0, flow=f, var=["z"], name="q")
        p = Normal(loc=torch.tensor(2.), scale=torch.tensor(1.), var=["z"], name="p")
        s = q.sample(batch_n=4000, reparam=True)
        kl = (q.get_log_prob(s) - p.get_log_prob(s)).mean()
        kl.backward()
        return q0.mu.grad.item()

    ref, ours = run_both(program)
    assert ours == pytest.approx(-2.0, abs=0.1)
    assert ref == pytest.approx(0.0, abs=0.1)


def test_mask_helpers_match_pixyz() -> None:
    def program():
        from pixyz.flows.coupling import channel_wise_mask, checkerboard_mask

        masks = [checkerboard_mask(5, 4, False), checkerboard_mask(3, 3, True), channel_wise_mask(7, False),
                 channel_wise_mask(6, True)]
        return [(type(m).__name__, str(m.dtype), m.tolist()) for m in masks]

    assert_same(*run_both(program))


def test_inverse_transformed_with_a_conditional_prior_and_two_conditioning_variables() -> None:
    """cond_var=["y", "h"]: the flow gets y (Pixyz passes the first one), the prior q(z|h) gets h; an AffineCoupling
    given scale_net, translate_net and scale_translate_net uses the pair, as Pixyz's does."""
    def program():
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import AffineCoupling, FlowList

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(4 + 2, 4)

            def forward(self, x, y):
                return torch.tanh(self.lin(torch.cat([x, y], 1)))

        prior = Normal(loc="h", scale=torch.tensor(1.), var=["z"], cond_var=["h"], name="q")
        coupling = AffineCoupling(4, scale_net=Net(), translate_net=Net(), scale_translate_net=lambda x, y: (x, x))
        p = InverseTransformedDistribution(prior=prior, flow=FlowList([coupling]), var=["x"], cond_var=["y", "h"])
        x, y, h = torch.randn(3, 4), torch.randn(3, 2), torch.randn(3, 4)
        s = p.sample({"y": y, "h": h})
        return {"text": str(p), "cond_var": p.cond_var, "log_prob": p.get_log_prob({"x": x, "y": y, "h": h}),
                "sample": s, "sample_log_prob": p.get_log_prob(s)}

    assert_same(*run_both(program), atol=1e-5)


def test_a_conditional_inverse_flow_draws_one_sample_per_condition() -> None:
    """``InverseTransformedDistribution(..., cond_var=["y"]).sample({"y": y})`` with a batch of B conditions: Pixyz
    draws one prior sample and maps it (batch 1, whatever B; and it raises when a layer reads y, whose batch then
    differs from the draw's), where every other conditional distribution gives one draw per condition. Ours draws
    B, one per condition: the inverse flow of B prior draws (checked by mapping them back)."""
    def program():
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import FlowList, Reverse, Shuffle

        prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="p_{prior}")
        flow = FlowList([Shuffle(3), Reverse(3)])
        p = InverseTransformedDistribution(prior, flow, var=["x"], cond_var=["y"], name="p")
        x = p.sample({"y": torch.randn(4, 1)})["x"]
        return x, flow.forward(x), p.get_log_prob({"x": x, "y": torch.zeros(4, 1)})

    (x_r, _, _), (x_o, z_o, lp_o) = run_both(program)
    assert x_r.shape == (1, 3) and x_o.shape == (4, 3)
    assert len({tuple(row.tolist()) for row in x_o}) == 4  # four draws, not one repeated
    torch.testing.assert_close(lp_o, torch.distributions.Normal(0., 1.).log_prob(z_o).sum(-1))  # permutations: det 1


# ---------------------------------------------------------------------------------------------------------------
# random vector flows


@st.composite
def flow_specs(draw: Any) -> dict[str, Any]:
    # (the constrained planar flow differs where Pixyz's fold, and Pixyz cannot invert a planar flow: left out)
    kind = draw(st.sampled_from(["transformed", "inverse", "inverse_cond"]))
    layers = ["coupling", "coupling_inv", "bn", "shuffle", "reverse", "perm"] + (
        ["planar"] if kind == "transformed" else [])
    return {"d": draw(st.integers(2, 4)), "layers": draw(st.lists(st.sampled_from(layers), min_size=1, max_size=4)),
            "kind": kind, "batch": draw(st.integers(2, 4)), "train": draw(st.sampled_from([0, 2])),
            "eval_mode": draw(st.booleans()), "nested": draw(st.booleans())}


def flow_program(spec: dict[str, Any]) -> Any:
    def program() -> Any:
        from torch import nn, optim
        import pixyz.flows as F
        from pixyz.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
        from pixyz.losses import LogProb
        from pixyz.models import Model

        d, kind, n = spec["d"], spec["kind"], spec["batch"]

        class ScaleTranslate(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(d + (kind == "inverse_cond"), 2 * d)

            def forward(self, x, y=None):
                o = self.fc(x if y is None else torch.cat([x, y], -1))
                return torch.tanh(o[..., :d]), o[..., d:]

        layers = [{"planar": lambda: F.PlanarFlow(d), "bn": lambda: F.BatchNorm1d(d),
                   "coupling": lambda: F.AffineCoupling(d, scale_translate_net=ScaleTranslate()),
                   "coupling_inv": lambda: F.AffineCoupling(d, scale_translate_net=ScaleTranslate(), inverse_mask=True),
                   "shuffle": lambda: F.Shuffle(d), "reverse": lambda: F.Reverse(d),
                   "perm": lambda: F.Permutation(torch.randperm(d))}[k]() for k in spec["layers"]]
        flow = (F.FlowList([F.FlowList(layers[:1]), F.FlowList(layers[1:])]) if spec["nested"] and len(layers) > 1
                else F.FlowList(layers))
        prior = Normal(loc=torch.zeros(d), scale=torch.ones(d), var=["z"], name="p_{prior}")
        if kind == "transformed":
            dist = TransformedDistribution(prior, flow, var=["x"], name="p")
        else:
            dist = InverseTransformedDistribution(prior, flow, var=["x"], cond_var=["y"] if kind == "inverse_cond"
                                                  else [], name="p")
        data = {"x": torch.randn(n, d), "y": torch.randn(n, 1)} if kind == "inverse_cond" else {"x": torch.randn(n, d)}
        out: dict[str, Any] = {"text": str(dist), "flow": str(flow)}
        if spec["eval_mode"]:
            dist.eval()
        if kind == "transformed":  # scored on its own draws (Pixyz reuses the last draw's log-det)
            drawn = dist.sample(batch_n=n)
            out["sample"], out["log_prob"] = drawn, dist.get_log_prob(drawn)
            return out
        out["log_prob"] = dist.get_log_prob({k: v.clone() for k, v in data.items()})
        # (one condition: with a batch of them Pixyz draws one sample, pyro_dgm one per condition)
        out["sample"] = dist.sample({"y": torch.randn(1, 1)} if kind == "inverse_cond" else {},
                                    batch_n=None if kind == "inverse_cond" else n)
        loss = -LogProb(dist).mean()
        out["loss_text"] = str(loss)
        if spec["train"] and any(True for _ in dist.parameters()):
            dist.train()
            model = Model(loss, distributions=[dist], optimizer=optim.SGD, optimizer_params={"lr": 0.05})
            out["steps"] = [model.train({k: v.clone() for k, v in data.items()}) for _ in range(spec["train"])]
            out["weights"] = [w.detach().clone() for w in dist.parameters()]
        return out
    return program


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=flow_specs())
def test_random_vector_flows_match_pixyz(spec: dict[str, Any]) -> None:
    """Random stacks of couplings, batch norms, permutations and planar flows (nested or not) in a transformed or
    inverse-transformed (conditional) distribution: the same samples, log-densities, formulas and trained weights."""
    ref, ours = run_both(flow_program(spec))
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def _sampling_with_a_value_for_the_prior() -> Any:
    from pixyz.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
    from pixyz.flows import AffineCoupling, FlowList, Reverse

    prior = Normal(var=["z"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[2], name="p_{0}")
    forward = TransformedDistribution(prior, FlowList([Reverse(2)]), var=["y"])
    inverse = InverseTransformedDistribution(
        prior, FlowList([AffineCoupling(2, scale_translate_net=_vector_st_net(2)), Reverse(2)]), var=["x"])
    z = torch.tensor([[1., 2.], [3., 4.]])
    out = []
    for dist in (forward, inverse):
        for return_hidden in (True, False):
            for return_all in (True, False):
                out.append(dist.sample({"z": z.clone(), "w": torch.ones(1)}, return_hidden=return_hidden,
                                       return_all=return_all))
    return out


def test_a_value_given_for_the_prior_is_drawn_anew_and_returned_as_drawn() -> None:
    """The prior's variable is not an input of a flow distribution: Pixyz draws it anew and returns the drawn value
    (with ``return_hidden=False``, the given one; TransformedDistribution has no return_hidden and always returns
    it). Here the given value had been returned next to a variable mapped from another draw: the pair did not
    correspond."""
    ref, ours = run_both(_sampling_with_a_value_for_the_prior)
    assert_same(ref, ours, atol=1e-6)
    first = ours[0]
    torch.testing.assert_close(first["y"], first["z"].flip(-1))  # y = Reverse(z) of the returned z


def _layer_given_the_wrong_shape(layer: str) -> Any:
    def program() -> Any:
        import pixyz.flows as F

        flow, x = {"conv": (F.ChannelConv(4), torch.randn(2, 3, 2, 2)),
                   "batch norm 2d": (F.BatchNorm2d(4), torch.randn(2, 3, 2, 2)),
                   "squeeze": (F.Squeeze(), torch.randn(2, 1, 3, 3)),
                   "planar": (F.PlanarFlow(3), torch.randn(2, 4))}[layer]
        return flow(x)
    return program


@pytest.mark.parametrize("layer", ["conv", "batch norm 2d", "squeeze", "planar"])
def test_a_layer_given_the_wrong_shape_raises_pixyzs_runtime_error_too(layer: str) -> None:
    """Where torch refuses the shapes under Pixyz (a RuntimeError; a ValueError for an odd image size to squeeze),
    ours names the layer and the shapes in a ShapeError, a ValueError that is also that RuntimeError (it was a
    ValueError only)."""
    from pyro_dgm.utils.checks import ShapeError

    pixyz_error, ours = raises_same(_layer_given_the_wrong_shape(layer))
    assert pixyz_error is (ValueError if layer == "squeeze" else RuntimeError)
    assert issubclass(ours, ShapeError) and issubclass(ours, pixyz_error)
