"""Pixyz 0.3.3's flow and utility tests, re-written as differential programs: each flow's forward, inverse and
log-determinant (``pixyz.flows``), ``TransformedDistribution``/``InverseTransformedDistribution`` (sample, score,
inference, print), and the helpers of ``pixyz.utils``, under Pixyz 0.3.3 and under pyro_dgm from the same seed.
"""
from __future__ import annotations

import pytest

from pixyz_harness import same


# ================================================================================================== flows
def _flow_program(build_src: str, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        import torch
        import pixyz.flows as pf
        f = eval(build_src, {"torch": torch, "pf": pf, "_ScaleTranslate": _ScaleTranslate})
        x = torch.randn(*shape)
        z = f(x, compute_jacobian=True)
        logdet = f.logdet_jacobian
        back = f.inverse(z)
        return z, logdet, back, f.forward(x, compute_jacobian=False).shape
    return program


FLOWS = {
    "PlanarFlow": ("pf.PlanarFlow(3)", (4, 3)),
    "AffineCoupling": ("pf.AffineCoupling(in_features=4, mask_type='channel_wise', inverse_mask=False, "
                       "scale_translate_net=_ScaleTranslate(4))", (4, 4)),
    "BatchNorm1d": ("pf.BatchNorm1d(3).eval()", (5, 3)),
    "Permutation": ("pf.Permutation(torch.tensor([2, 0, 1]))", (4, 3)),
    "Shuffle": ("pf.Shuffle(4)", (2, 4)),
    "Reverse": ("pf.Reverse(4)", (2, 4)),
    "Flatten": ("pf.Flatten()", (4, 2, 3, 2)),
    "Squeeze": ("pf.Squeeze()", (2, 1, 4, 4)),
    "Unsqueeze": ("pf.Unsqueeze()", (2, 4, 2, 2)),
    "FlowList": ("pf.FlowList([pf.PlanarFlow(3), pf.Reverse(3), pf.PlanarFlow(3)])", (4, 3)),
}
ILL_DEFINED_INVERSE = {"PlanarFlow", "FlowList"}  # no closed-form inverse (Pixyz: NotImplementedError)
# PlanarFlow(constraint_u=True) and Preprocess differ on purpose (Pixyz's u_hat divides by |w|, not |w|^2; its
# Preprocess log-determinant leaves out log(255/256), its inverse only undoes the logit): see test_diff_flows.py


class _ScaleTranslate:
    """Pixyz's docstring scale-and-translate network for AffineCoupling, built inside the program."""

    def __new__(cls, features: int):  # type: ignore[no-untyped-def]
        import torch
        from torch import nn

        class ScaleTranslate(nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = nn.Linear(features, 2 * features)  # on the masked input

            def forward(self, x):
                s, t = torch.chunk(self.layer(x), 2, dim=-1)
                return torch.tanh(s), t

        return ScaleTranslate()


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_flow(name: str) -> None:
    build, shape = FLOWS[name]
    if name in ILL_DEFINED_INVERSE:
        def program():  # type: ignore[no-untyped-def]
            import torch
            import pixyz.flows as pf
            f = eval(build, {"torch": torch, "pf": pf})
            x = torch.randn(*shape)
            return f(x, compute_jacobian=True), f.logdet_jacobian, str(f)
        same(program, rtol=1e-5, atol=1e-5)
    else:
        same(_flow_program(build, shape), rtol=1e-5, atol=1e-5)


def transformed_distribution():
    import torch
    from pixyz.distributions import Normal, TransformedDistribution, InverseTransformedDistribution
    from pixyz.flows import PlanarFlow, FlowList, AffineCoupling, BatchNorm1d
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="p_{prior}")
    p = TransformedDistribution(prior=prior, flow=FlowList([PlanarFlow(3), PlanarFlow(3)]), var=["x"])
    s = p.sample(batch_n=4, compute_jacobian=True)
    coupling = AffineCoupling(4, scale_translate_net=_ScaleTranslate(4))
    prior4 = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    q = InverseTransformedDistribution(prior=prior4, flow=FlowList([coupling, BatchNorm1d(4).eval()]), var=["x"])
    x = torch.randn(4, 4)
    return (str(p), p.prob_text, p.var, s, p.get_log_prob(s), str(q), q.var, q.get_log_prob({"x": x}),
            q.inference({"x": x}), q.sample(batch_n=2), p.distribution_name, q.distribution_name,
            p.flow_input_var, q.flow_output_var)


def test_transformed_distributions() -> None:
    same(transformed_distribution, rtol=1e-5, atol=1e-5)


# ================================================================================================== utils
def utils_dicts():
    import torch
    from pixyz.utils import (get_dict_values, delete_dict_values, detach_dict, replace_dict_keys,
                             replace_dict_keys_split, tolist, sum_samples, convert_latex_name)
    d = {"a": 1, "b": 2, "c": 3}
    t = {"x": torch.ones(2, requires_grad=True), "y": torch.zeros(1)}
    det = detach_dict(t)
    samples = torch.ones(2, 3, 4)
    return (get_dict_values(d, ["b"]), get_dict_values(d, ["b", "d"], return_dict=True), get_dict_values(d, "a"),
            delete_dict_values(d, ["b", "d"]), det["x"].requires_grad, replace_dict_keys(d, {"a": "x", "b": "y"}),
            replace_dict_keys_split({"a": 1, "b": 2}, {"a": "x"}), tolist(2), tolist([1, 2]), tolist("x"),
            tolist(torch.Size([2])), sum_samples(samples), sum_samples(samples, sum_dims=[1]),
            sum_samples(torch.ones(2)), convert_latex_name("z_{t-1}"), convert_latex_name("x_t"),
            convert_latex_name("mu"))


def utils_settings():
    from pixyz import utils
    before = utils.epsilon(), utils.cache_maxsize()
    utils.set_epsilon(1e-6)
    utils.set_cache_maxsize(100)
    after = utils.epsilon(), utils.cache_maxsize()
    utils.set_epsilon(before[0])
    utils.set_cache_maxsize(before[1])
    return before, after


@pytest.mark.parametrize("program", [utils_dicts, pytest.param(utils_settings, marks=pytest.mark.xfail(
    strict=True, reason="pyro_dgm.utils.cache_maxsize() is 128 by default, Pixyz's 20 -- owned by surface"))])
def test_utils(program) -> None:  # type: ignore[no-untyped-def]
    same(program)


def print_latex_of_everything():
    import torch
    from pixyz.utils import print_latex
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler
    from pixyz.models import Model
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=1., name="q")
    p = Normal(var=["z"], loc=0., scale=1., name="p")
    loss = KullbackLeibler(q, p).mean()
    model = Model(loss, distributions=[q, torch.nn.Linear(1, 1)])
    return [print_latex(o).data for o in (q, q * Normal(var=["x"], loc=0., scale=1.), loss, model)]


def test_print_latex() -> None:
    same(print_latex_of_everything)
