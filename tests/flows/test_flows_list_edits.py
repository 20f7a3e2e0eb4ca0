"""Layers appended to, or put in place of others in, a ``FlowList``'s ``flow_list`` after construction, against
Pixyz 0.3.3 (whose FlowList runs ``self.flow_list`` as it is at each call).

pyro_dgm kept the layers given at construction: an appended batch norm never ran (log-densities off by its
log-det, running statistics never moved), an appended coupling was not applied, a replaced layer still ran.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both  # noqa: E402


def test_a_batch_norm_appended_after_the_first_draw_runs():
    def program():
        import torch
        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import BatchNorm1d, FlowList, Reverse
        flow = FlowList([Reverse(4)])
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4])
        p = TransformedDistribution(prior=prior, flow=flow, var=["x"])
        first = p.get_log_prob(p.sample(batch_n=8))
        flow.flow_list.append(BatchNorm1d(4))
        s = p.sample(batch_n=8)
        bn = flow.flow_list[1]
        return first, s, p.get_log_prob(s), bn.running_mean, bn.running_var

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_layers_appended_and_replaced_before_use_run():
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import AffineCoupling, FlowList, PlanarFlow, Reverse

        class ST(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 8)

            def forward(self, x):
                h = self.fc(x)
                return torch.tanh(h[..., :4]), h[..., 4:]

        flow = FlowList([Reverse(4), PlanarFlow(4)])
        flow.flow_list.append(AffineCoupling(4, mask_type="channel_wise", scale_translate_net=ST()))
        flow.flow_list[1] = Reverse(4)  # the planar flow (which Pixyz cannot invert) replaced
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4])
        p = InverseTransformedDistribution(prior=prior, flow=flow, var=["x"])
        x = torch.randn(5, 4)
        lp = p.get_log_prob({"x": x})
        return lp, torch.autograd.grad(lp.sum(), list(flow.parameters())), p.sample(batch_n=3), len(flow.flow_list)

    ref, ours = run_both(program)
    assert_same(ref, ours)
