"""Flows on inputs other than ``(N, C, H, W)`` images or ``(N, D)`` vectors, and a batch norm in training mode
scoring its own draws (probe p97). Each program runs under pixyz 0.3.3 and under pyro_dgm (import renamed) from the
same seed.

Pixyz reads dim 0 as the batch everywhere: its ``Flatten`` is ``x.view(x.size(0), -1)`` and its ``Preprocess`` sums
the log-determinant over every other dim. Ours' ``Preprocess`` log-det is exact, :math:`\\log(255/256)` lower per
value than Pixyz's (see ``tests/pixyz_compat/test_diff_flows.py``): the programs that contain it are compared after
adding that constant.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both  # noqa: E402

LOG_256_255 = math.log(256 / 255)  # per value: Pixyz's Preprocess log-det minus the exact one


def test_flatten_flattens_every_dim_but_the_batch_as_pixyz() -> None:
    """``(N, H, W) -> (N, H*W)``, ``(N, D)`` kept, ``(N,) -> (N, 1)``, images as before; each records its
    ``in_size`` (pyro_dgm flattened the last 3 dims whatever the input: (2, 3, 3) -> (18,), and refused (2, 5))."""
    def program() -> Any:
        from pixyz.flows import Flatten

        out = []
        for shape in [(2, 3, 3), (2, 5), (3,), (2, 2, 3, 3)]:
            f = Flatten()
            x = torch.randn(shape)
            out.append((f(x), f.in_size, f.logdet_jacobian))
        return out

    assert_same(*run_both(program))


def test_a_flow_density_over_hw_images_through_flatten() -> None:
    """``FlowList([Preprocess(), Flatten()])`` over ``(N, H, W)`` images with a prior over ``H*W`` features scores
    them as Pixyz (it was refused: the flattened shape did not fit the prior)."""
    def program() -> Any:
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flatten, FlowList, Preprocess

        x = torch.randint(0, 256, (2, 3, 3)) / 255.
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[9])
        flatten = Flatten()
        p = InverseTransformedDistribution(prior=prior, flow=FlowList([Preprocess(), flatten]), var=["x"])
        return p.get_log_prob({"x": x}), flatten.in_size

    (lp_r, size_r), (lp_o, size_o) = run_both(program)
    assert_same((lp_r, size_r), (lp_o + 9 * LOG_256_255, size_o), atol=1e-5)


def test_preprocess_sums_its_log_det_over_every_dim_but_the_batch() -> None:
    """``Preprocess`` alone on ``(N, H, W)`` gives one log-det per image and on ``(N,)`` one per value, as Pixyz
    (pyro_dgm gave ``(N, H)`` and a single number); within a distribution over ``(H, W)`` as before."""
    def program() -> Any:
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Preprocess

        x = torch.randint(0, 256, (2, 3, 3)) / 255.
        out = []
        for v in (x, torch.tensor([0.2, 0.5, 0.9])):
            f = Preprocess()
            out.append((f(v), f.logdet_jacobian))
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3, 3])
        p = InverseTransformedDistribution(prior=prior, flow=Preprocess(), var=["x"])
        return out, p.get_log_prob({"x": x})

    (out_r, lp_r), (out_o, lp_o) = run_both(program)
    (z3, ld3), (z1, ld1) = out_o
    assert_same((out_r, lp_r), ([(z3, ld3 + 9 * LOG_256_255), (z1, ld1 + LOG_256_255)], lp_o + 9 * LOG_256_255),
                atol=1e-5)


def test_preprocess_in_a_distribution_scores_values_with_sample_dims() -> None:
    """A value with a sample dim, ``(L, N, H, W)`` over a prior over ``(H, W)`` (refused: the flow read it as images)
    or ``(L, N, D)`` over ``D`` features, is scored as Pixyz scores it (one number per leading row)."""
    def program() -> Any:
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Preprocess

        out = []
        for features, shape in (([3, 3], (5, 2, 3, 3)), ([4], (5, 2, 4))):
            prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=features)
            p = InverseTransformedDistribution(prior=prior, flow=Preprocess(), var=["x"])
            out.append(p.get_log_prob({"x": torch.randint(0, 256, shape) / 255.}))
        return out

    ref, (lp_hw, lp_d) = run_both(program)
    assert_same(ref, [lp_hw + 18 * LOG_256_255, lp_d + 8 * LOG_256_255], atol=1e-4)


def test_an_image_coupling_takes_its_mask_from_the_channels_whatever_in_features() -> None:
    """``AffineCoupling(3)`` on ``(2, 4, 3, 3)`` images: Pixyz never reads ``in_features`` for 4-D inputs (the mask
    comes from the 4 channels); pyro_dgm read them as vectors of width 3 (the width equals in_features)."""
    def program() -> Any:
        from pixyz.flows import AffineCoupling

        net = torch.nn.Conv2d(4, 8, 3, padding=1)

        def st(x):
            return tuple(torch.tanh(h) for h in net(x).chunk(2, dim=1))

        f = AffineCoupling(3, mask_type="channel_wise", scale_translate_net=st)
        x = torch.randn(2, 4, 3, 3)
        z = f(x)
        return f.build_mask(x), z, f.logdet_jacobian, f.inverse(z)

    assert_same(*run_both(program), atol=1e-5)


@pytest.mark.parametrize("listed", [False, True], ids=["flow", "flow_list"])
def test_a_flow_density_over_scalars(listed: bool) -> None:
    """A prior over scalars and ``Preprocess()`` (alone or in a ``FlowList``): values ``(N,)`` are scored and
    ``sample(batch_n=3)`` gives ``(3,)``, as Pixyz (pyro_dgm refused ``(N,)``, expecting ``(..., 1)``, and drew
    ``(3, 1)``). Pixyz's inverse is not the forward's (only the logit is undone), so the drawn values differ."""
    def program() -> Any:
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import FlowList, Preprocess

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"])
        p = InverseTransformedDistribution(prior=prior, flow=FlowList([Preprocess()]) if listed else Preprocess(),
                                           var=["x"])
        lp = p.get_log_prob({"x": torch.rand(4)})
        s = p.sample(batch_n=3)
        return lp, {k: tuple(v.shape) for k, v in s.items()}, s["z"]

    (lp_r, shapes_r, z_r), (lp_o, shapes_o, z_o) = run_both(program)
    assert_same((lp_r, shapes_r, z_r), (lp_o + LOG_256_255, shapes_o, z_o), atol=1e-5)


def test_a_train_mode_batch_norm_flow_scores_its_draw_with_new_batch_statistics() -> None:
    """In training mode, ``get_log_prob`` of an ``x`` just drawn runs the flow forward on it, as Pixyz: new batch
    statistics (and running ones), and the log-det at them; pyro_dgm answered from the flow's memory of the draw. The
    draw's ``z`` is still the prior's draw. (The sample dict itself is not scored: Pixyz reads its stale ``z``.)"""
    def program() -> Any:
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import BatchNorm1d, FlowList

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_0")
        bn = BatchNorm1d(2)
        p = InverseTransformedDistribution(prior, FlowList([bn]), var=["x"])
        p.get_log_prob({"x": torch.randn(64, 2) * 3 + 5})
        s = p.sample(batch_n=4)
        lp = p.get_log_prob({"x": s["x"]})
        return s, lp, bn.running_mean, bn.running_var, bn.logdet_jacobian

    assert_same(*run_both(program), atol=1e-5)


def test_a_coupling_net_with_a_train_mode_batch_norm_runs_again_on_its_draw() -> None:
    """A coupling whose network (a module) holds a ``torch.nn.BatchNorm1d`` in training mode: scoring a draw runs
    the network forward, as Pixyz, so its running statistics move (they did not: the memory of the draw answered)."""
    def program() -> Any:
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import AffineCoupling

        class ScaleTranslate(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm = nn.BatchNorm1d(4)
                self.fc = nn.Linear(4, 8)

            def forward(self, x):
                s, t = self.fc(self.norm(x)).chunk(2, dim=-1)
                return torch.tanh(s), t

        net = ScaleTranslate()
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"])
        p = InverseTransformedDistribution(prior, AffineCoupling(4, scale_translate_net=net), var=["x"])
        s = p.sample(batch_n=5)
        lp = p.get_log_prob({"x": s["x"]})
        return s, lp, net.norm.running_mean, net.norm.num_batches_tracked

    assert_same(*run_both(program), atol=1e-5)


def test_a_weight_normalized_convolution_has_its_weight() -> None:
    """``pyro_dgm.layers``' weight-normalized convolutions expose ``conv.weight``, the normalized weight, as Pixyz's
    (``torch.nn.utils.weight_norm``) do; it was missing."""
    def program() -> Any:
        from pixyz.layers import ResNet

        net = ResNet(3, 8, 6, 1, 3, 1, False)
        return [net.in_conv.conv.weight, net.blocks[0].in_conv.conv.weight, net.out_conv.conv.weight]

    assert_same(*run_both(program))
