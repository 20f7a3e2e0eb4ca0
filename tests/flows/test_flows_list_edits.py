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


# Attack round p113 on the fix above.

def _planar_pair():
    import torch
    from pyro_dgm.flows import FlowList, PlanarFlow, Reverse

    torch.manual_seed(0)
    a, b = PlanarFlow(3), Reverse(3)
    return FlowList, a, b


def test_a_flow_list_pickled_before_the_fix_loads_and_runs_its_appended_layer():
    """The earlier format: the parts under ``_dgm_parts`` (a layer appended then was left out of them), the batch
    layers cached as a plain tuple (``()``: an IndexError after loading)."""
    import pickle

    import torch
    from pyro_dgm.distributions import Normal, TransformedDistribution

    FlowList, a, b = _planar_pair()
    flow = FlowList([a])
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], features_shape=[3])
    p = TransformedDistribution(prior=prior, flow=flow, var=["x"])
    p.sample(batch_n=2)
    d = flow.__dict__  # as the code before wrote it
    d["_dgm_parts"] = d.pop("_dgm_parts_list")
    del d["_dgm_module_parts"]
    d.pop("_dgm_batch_layers_at", None)
    d["_dgm_batch_layers"] = ()
    flow.flow_list.append(b)  # (appended under the code before: not among its parts)
    loaded = pickle.loads(pickle.dumps(p))
    torch.manual_seed(1)
    s = loaded.sample(batch_n=4)
    fresh = TransformedDistribution(prior=prior, flow=FlowList([a, b]), var=["x"])
    torch.manual_seed(1)
    t = fresh.sample(batch_n=4)
    torch.testing.assert_close(s["x"], t["x"])
    torch.testing.assert_close(loaded.get_log_prob(s), fresh.get_log_prob(t))


def test_transforms_that_are_not_modules_keep_their_places_after_a_deletion():
    import torch
    from torch.distributions import ComposeTransform
    from torch.distributions.transforms import AffineTransform

    from pyro_dgm.flows import PlanarFlow

    FlowList, a, _ = _planar_pair()
    b = PlanarFlow(3)
    aff = AffineTransform(torch.tensor(1.0), torch.tensor(2.0))
    f = FlowList([a, aff, b])
    del f.flow_list[0]
    x = torch.randn(4, 3)
    z, ld = f.forward_with_logdet(x)
    twin = ComposeTransform([aff, b])
    zt = twin(x)
    torch.testing.assert_close(z, zt)
    torch.testing.assert_close(ld, twin.log_abs_det_jacobian(x, zt))  # (torch sums the affine's over the event)


def test_a_module_that_is_no_flow_appended_is_named():
    import pytest
    import torch
    from torch import nn

    FlowList, a, _ = _planar_pair()
    f = FlowList([a])
    f.flow_list.append(nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"FlowList: flow_list\[1\] must be a flow or a torch/Pyro transform, got "
                                        r"Linear"):
        f.forward(torch.randn(2, 3))
