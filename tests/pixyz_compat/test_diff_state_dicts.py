"""State dicts and parameter lists of every flow layer and of the distributions that hold modules, under Pixyz 0.3.3
and under pyro_dgm (only the import renamed).

A program ported from Pixyz loads the checkpoints it saved there (``load_state_dict`` with ``strict=True``) and
hands ``parameters()`` to optimizers whose saved states hold the parameters by position: the parameters must come
in Pixyz's order with Pixyz's names and shapes, and a state dict saved by Pixyz must load and give Pixyz's values.
"""
from __future__ import annotations

from typing import Any

import torch

from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm


def modules() -> dict[str, Any]:
    """One of each flow layer and of the distributions that hold modules or buffers (built under the renamed
    import)."""
    from torch import nn
    import pixyz.distributions as pd
    import pixyz.flows as F

    class ScaleTranslate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)

        def forward(self, x):
            o = self.fc(x)
            return torch.tanh(o[..., :4]), o[..., 4:]

    class Expert(pd.Normal):
        def __init__(self, v):
            super().__init__(var=["z"], cond_var=[v], name=f"q_{v}")
            self.fc = nn.Linear(2, 4)

        def forward(self, **inputs):
            (a,) = inputs.values()
            h = self.fc(a)
            return {"loc": h[..., :2], "scale": h[..., 2:].exp()}

    prior = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    experts = [pd.Normal(loc=torch.randn(2), scale=torch.ones(2), var=["x"], name=f"p_{i}") for i in range(2)]
    return {
        "planar": F.PlanarFlow(3), "coupling": F.AffineCoupling(4, scale_translate_net=ScaleTranslate()),
        "coupling, two nets": F.AffineCoupling(4, scale_net=nn.Linear(4, 4), translate_net=nn.Linear(4, 4)),
        "conv": F.ChannelConv(4), "conv, LU": F.ChannelConv(4, decomposed=True), "squeeze": F.Squeeze(),
        "permutation": F.Permutation(torch.tensor([1, 0, 2])), "shuffle": F.Shuffle(4), "reverse": F.Reverse(4),
        "flatten": F.Flatten([1, 2, 2]), "preprocess": F.Preprocess(), "batch norm": F.BatchNorm1d(3),
        "batch norm 2d": F.BatchNorm2d(3), "act norm": F.ActNorm2d(3),
        "flow list": F.FlowList([F.PlanarFlow(2), F.BatchNorm1d(2)]),
        "transformed": pd.TransformedDistribution(prior, F.FlowList([F.PlanarFlow(2)]), var=["x"]),
        "mixture": pd.MixtureModel(experts, pd.Categorical(probs=torch.tensor([.3, .7]), var=["c"])),
        "product of experts": pd.ProductOfNormal([Expert("a"), Expert("b")], weight_modalities=[1., 2., .5]),
        "mixture of experts": pd.MixtureOfNormal([Expert("a"), Expert("b")], weight_modalities=[.25, .75]),
        "joint": pd.Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * prior,
    }


def _parameter_lists() -> Any:
    return {k: ([(n, tuple(t.shape)) for n, t in m.named_parameters()], [n for n, _ in m.named_modules()])
            for k, m in modules().items()}


def test_parameters_come_in_pixyzs_order_with_its_names_and_shapes() -> None:
    """(The LU-decomposed ChannelConv registered ``u`` before ``log_s``: an optimizer state saved by Pixyz then
    gave each of the two the other's moments.)"""
    assert_same(run_pixyz(_parameter_lists), run_pyro_dgm(_parameter_lists))


def _saved() -> Any:
    torch.manual_seed(0)
    out = {}
    for k, m in modules().items():
        with torch.no_grad():  # values a fresh module does not have
            for t in m.parameters():
                t.add_(0.1 * torch.randn_like(t))
        out[k] = {n: t.clone() for n, t in m.state_dict().items()}
    return out


def _loaded(states: dict[str, Any]) -> Any:
    def program() -> Any:
        torch.manual_seed(1)  # other initial values and permutations than the saved ones
        mods = modules()
        for k, m in mods.items():
            m.load_state_dict(states[k])  # strict
        torch.manual_seed(2)
        return {
            "planar": mods["planar"](torch.randn(2, 3)), "coupling": mods["coupling"](torch.randn(2, 4)),
            "conv, LU": (mods["conv, LU"](torch.randn(2, 4, 2, 2)), mods["conv, LU"].logdet_jacobian),
            "product of experts": mods["product of experts"].get_params({"a": torch.ones(1, 2), "b": torch.ones(1, 2)}),
            "weights": [[float(w) for w in mods[k].weight_modalities] for k in ("product of experts",
                                                                                 "mixture of experts")],
            "mixture": mods["mixture"].get_log_prob({"x": torch.randn(3, 2)}),
        }
    return program


def test_a_state_dict_saved_by_pixyz_loads_strictly_and_computes_pixyzs_values() -> None:
    """(Pixyz's products and mixtures of experts keep ``weight_modalities`` as a list that its state dicts lack:
    ``strict=True`` refused their state dicts here, a missing key; the loaded weights are those given at
    construction.)"""
    states = run_pixyz(_saved)
    ref = run_pixyz(_loaded(states))
    ours = run_pyro_dgm(_loaded(states))
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)
