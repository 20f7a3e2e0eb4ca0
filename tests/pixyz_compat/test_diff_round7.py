"""Seventh round of probes, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- ``replace_var`` kept each renamed conditioning variable where it was (``q(z|x,h_{0},r)``); Pixyz renames its
  graph in place, which moves a renamed variable to the end of the graph's order: ``q(z|x,r,h_{0})``, with
  ``cond_var`` and ``input_var`` in that order. A renaming of a renaming moves the variables of each step in turn.
  The printed formulas of DRAW/GQN-style programs (per-step copies made by renaming) differed. A renaming of a
  renaming is a wrapper of a wrapper, as in Pixyz (state dict keys, printed text).
- A product's (renaming's, marginal's) ``sample`` dict kept the order the values were given in; Pixyz's lists the
  other given values, then the inputs in ``input_var``'s order, then the draws.
- Under ``torch.func.vmap``, a draw that torch's sampler refused (random numbers without ``randomness=``) raised
  vmap's "data-dependent control flow" error from our diagnosis of the refusal, hiding torch's own message (which
  says to pass ``randomness``), which Pixyz shows.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm


def prog_renamed_variables_move_to_the_end() -> Any:
    import torch
    from pixyz.distributions import Deterministic, Normal

    class Two(Deterministic):  # one factor generating two variables
        def __init__(self):
            super().__init__(var=["h", "c"], cond_var=["x", "r"], name="f")

        def forward(self, x, r):
            return {"h": x + r, "c": x - r}

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x", "h", "r"], name="q")

        def forward(self, x, h, r):
            return {"loc": x + 2 * h - r, "scale": torch.ones_like(x)}

    q = Q()
    p = Normal(var=["x"], cond_var=["a", "b"], loc="a", scale=1.0, name="p")
    f = Two()
    renamed = {
        "one": q.replace_var(h="h0"),
        "two": q.replace_var(x="a", h="b"),
        "two_reversed": q.replace_var(h="b", x="a"),
        "first": q.replace_var(x="y"),
        "var": q.replace_var(z="w"),
        "chain": q.replace_var(h="h0").replace_var(x="a"),
        "chain_back": q.replace_var(h="h0").replace_var(h0="h"),
        "chain_of_three": q.replace_var(x="x1").replace_var(r="r1").replace_var(h="h1"),
        "swap": p.replace_var(a="b0").replace_var(b="a", b0="b"),
        "two_vars": f.replace_var(h="h1"),
        "two_vars_cond": f.replace_var(x="x1", c="c1"),
    }
    out = {k: [d.prob_text, d.var, d.cond_var, d.input_var] for k, d in renamed.items()}
    joints = {
        "product": q.replace_var(h="h0") * p,
        "product_chain": q.replace_var(h="h0").replace_var(x="u") * p.replace_var(x="u"),
        "joint_renamed": (q * p).replace_var(a="a0", r="r0"),
        "deterministic": f.replace_var(x="x1") * p.replace_var(x="x1"),
    }
    out.update({k: [d.prob_text, d.prob_factorized_text, d.var, d.cond_var, d.input_var] for k, d in joints.items()})
    out["printed"] = str(q.replace_var(h="h0").replace_var(x="a"))
    torch.manual_seed(0)
    d = q.replace_var(h="h0").replace_var(x="a")
    sample = d.sample({"a": torch.zeros(2, 1), "h0": torch.ones(2, 1), "r": torch.ones(2, 1)})
    out["sample"] = [list(sample), sample["z"], d.get_log_prob(sample)]
    return out


def test_renamed_variables_are_ordered_as_pixyzs_graph() -> None:
    ref, ours = run_both(prog_renamed_variables_move_to_the_end)
    assert ref["one"][0] == "q(z|x,r,h_{0})"  # (the order this test is about)
    assert_same(ref, ours)


def prog_sample_dict_order_of_products_and_renamings() -> Any:
    """Pixyz's graph returns the given values that are not inputs, then the inputs in ``input_var``'s order, then
    the draws in the order drawn (code that iterates over a sample, e.g. ``torch.cat(list(s.values()))``, sees it)."""
    import torch
    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z", "w"])

        def forward(self, z, w):
            return {"loc": z + w, "scale": torch.ones_like(z)}

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["y", "v"], name="q")

        def forward(self, y, v):
            return {"loc": y + v, "scale": torch.ones_like(y)}

    q = Q()
    given = {"v": torch.zeros(2, 1), "extra": torch.zeros(2, 1), "w": torch.ones(2, 1), "y": torch.ones(2, 1)}
    backwards = dict(reversed(list(given.items())))
    out = {}
    for name, d in {"atomic": q, "product": P() * q, "marginal": (P() * q).marginalize_var("z"),
                    "renamed": q.replace_var(y="u"), "renamed_twice": q.replace_var(y="u").replace_var(v="y")}.items():
        inputs = {**{k: v for k, v in given.items() if k not in ("y", "v")},
                  **{v: torch.ones(2, 1) for v in d.input_var}}
        for order, values in (("given", inputs), ("backwards", dict(reversed(list(inputs.items()))))):
            s = d.sample(values)
            out[f"{name}_{order}"] = [list(s), list(d.sample(values, return_all=False))]
    out["cat"] = torch.cat(list((P() * q).sample(backwards).values()), dim=1)
    return out


def test_sample_dicts_are_ordered_as_pixyzs() -> None:
    ref, ours = run_both(prog_sample_dict_order_of_products_and_renamings)
    assert ref["product_given"][0] == ["extra", "w", "y", "v", "z", "x"]  # (the order this test is about)
    assert_same(ref, ours)


def _vmap_sample(randomness: str | None) -> Any:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal

        p = Normal(loc="m", scale=torch.tensor(1.0), var=["x"], cond_var=["m"])
        options = {} if randomness is None else {"randomness": randomness}
        return torch.func.vmap(lambda m: p.sample({"m": m}, reparam=True)["x"], **options)(torch.zeros(6, 1, 2))
    return program


@pytest.mark.parametrize("randomness", [None, "different"])
def test_vmap_refusing_a_draw_raises_torchs_error_as_pixyz(randomness: str | None) -> None:
    messages = []
    for run in (run_pixyz, run_pyro_dgm):
        with pytest.raises(RuntimeError) as info:
            run(_vmap_sample(randomness))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "randomness" in messages[1]  # torch's advice, not "data-dependent control flow"


def test_vmap_with_the_same_randomness_draws_as_pixyz() -> None:
    ref, ours = run_both(_vmap_sample("same"))
    assert_same(ref, ours)
    assert bool((ours == ours[0]).all())  # one draw shared by the mapped rows, as randomness="same" says


def prog_analytic_kl_of_renamed_conditionals() -> Any:
    """The per-step KL of DRAW/GQN-style programs: two conditional distributions renamed to the step's names."""
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["h"], name="q")
            self.net = torch.nn.Linear(3, 4)

        def forward(self, h):
            out = self.net(h)
            return {"loc": out[:, :2], "scale": torch.nn.functional.softplus(out[:, 2:])}

    torch.manual_seed(0)
    q, p = Q(), Q()
    h0 = torch.randn(5, 3)
    kl = KullbackLeibler(q.replace_var(z="z1", h="h0"), p.replace_var(z="z1", h="h0")).eval({"h0": h0})
    return kl, [q.get_params({"h": h0}), p.get_params({"h": h0})]


def test_analytic_kl_of_renamed_conditionals_runs_where_pixyz_raises() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'h0'"):
        run_pixyz(prog_analytic_kl_of_renamed_conditionals)
    kl, (a, b) = run_pyro_dgm(prog_analytic_kl_of_renamed_conditionals)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(a["loc"], a["scale"]),
                                                 torch.distributions.Normal(b["loc"], b["scale"])).sum(-1)
    torch.testing.assert_close(kl, expected)


def _gan_parts(bias: float = 0.0, integer_output: bool = False) -> Any:
    """A generator g(x|z), a discriminator d(t|x) ending in a sigmoid whose last bias is ``bias`` (or a critic
    that outputs integers) and the generator's marginal p(x), for the programs below."""
    import torch
    from torch import nn
    from pixyz.distributions import Deterministic, Normal

    class G(Deterministic):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z):
            return {"x": torch.sigmoid(self.fc(z))}

    class D(Deterministic):
        def __init__(self):
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(3, 1)
            with torch.no_grad():
                self.fc.bias.fill_(bias)

        def forward(self, x):
            h = self.fc(x)
            return {"t": (h > 0).long() if integer_output else torch.sigmoid(h)}  # (a comparison left in: integers)

    g, d = G(), D()
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2])
    return g, d, (g * prior).marginalize_var("z")


def _adversarial_term(cls_name: str, d: Any, p: Any) -> Any:
    from torch import optim
    from pixyz import losses
    from pixyz.distributions import EmpiricalDistribution

    return getattr(losses, cls_name)(EmpiricalDistribution(["x"]), p, discriminator=d, optimizer=optim.Adam,
                                     optimizer_params={"lr": 1e-2})


def prog_gan_with_a_saturated_discriminator() -> Any:
    """A confident discriminator: its sigmoid gives exactly 1.0 in float32 (logits above ~17). Pixyz's BCE has finite
    gradients there (its backward divides by max(y (1 - y), 1e-12)); ours took log(1 - y) = -inf, whose clamp made
    the gradient nan, and refused the step."""
    import torch
    from torch import optim
    from pixyz.models import GAN

    _, d, p = _gan_parts(bias=20.0)
    model = GAN(p, d, optimizer=optim.Adam, optimizer_params={"lr": 1e-2}, d_optimizer=optim.Adam,
                d_optimizer_params={"lr": 1e-2})
    x = torch.rand(8, 3)
    losses = [[float(v) for v in model.train({"x": x})] for _ in range(2)]
    return losses, {k: v.detach().clone() for k, v in d.state_dict().items()}


def test_a_saturated_discriminator_trains_as_under_pixyz() -> None:
    ref, ours = run_both(prog_gan_with_a_saturated_discriminator)
    assert ref[0][0] == [100.0, 100.0]  # (the saturated case this test is about: -log(1 - 1) clamped at 100)
    assert_same(ref, ours)


def prog_wasserstein_critic_with_integer_output() -> Any:
    import torch

    _, d, p = _gan_parts(integer_output=True)
    return _adversarial_term("AdversarialWassersteinDistance", d, p).eval({"x": torch.rand(8, 3)})


def test_an_integer_critic_output_is_named() -> None:
    from pyro_dgm.utils.checks import DTypeError

    with pytest.raises(RuntimeError, match="could not infer output dtype"):
        run_pixyz(prog_wasserstein_critic_with_integer_output)
    with pytest.raises(DTypeError, match=r"the critic D d\(t\|x\) output values of dtype torch.int64"):
        run_pyro_dgm(prog_wasserstein_critic_with_integer_output)


def prog_adversarial_terms_under_autocast() -> Any:
    """Under ``torch.autocast`` the discriminator outputs bfloat16; Pixyz's ``nn.BCELoss`` runs in float32 there
    (autocast's list), ours computed the bfloat16 formula (20.0 where Pixyz gives 20.06)."""
    import torch

    _, d, p = _gan_parts(bias=-20.0)
    loss = _adversarial_term("AdversarialJensenShannon", d, p)
    x = torch.rand(8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [loss.eval({"x": x}), loss.eval({"x": x}, discriminator=True), loss.loss_train({"x": x})]
    return [(str(v.dtype), v) for v in values]


def test_adversarial_terms_compute_in_float32_under_autocast_as_pixyz() -> None:
    ref, ours = run_both(prog_adversarial_terms_under_autocast)
    assert ref[0][0] == "torch.float32"
    assert_same(ref, ours)


def prog_generator_side_value_and_discriminator_gradient() -> Any:
    import torch

    g, d, p = _gan_parts()
    value = _adversarial_term("AdversarialJensenShannon", d, p).eval({"x": torch.rand(8, 3)})
    value.backward()
    return value, g.fc.weight.grad, d.fc.weight.grad


def test_a_bare_generator_side_value_leaves_the_discriminator_out_of_its_graph() -> None:
    """porting.md: outside a ``Model`` that trains the discriminator, the generator-side value gives it no
    gradient (Pixyz's fills its ``.grad``, which the term's ``loss_train`` clears before its own step)."""
    ref, ours = run_both(prog_generator_side_value_and_discriminator_gradient)
    assert_same(ref[:2], ours[:2])  # the value and the generator's gradient
    assert ref[2] is not None and ours[2] is None
