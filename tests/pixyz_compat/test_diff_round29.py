"""Weights and constants swapped or changed inside one evaluation, and pairwise scores by broadcasting, against
Pixyz 0.3.3 and torch twins (round 29, probes p107 and p108).

- A constant prior at N(0, 1) whose constants are swapped for tensors that require grad
  (``torch.func.functional_call``, or ``p.scale = torch.ones(..., requires_grad=True)``) took the standard-form
  shortcut, which reads no parameter: the log-density had no graph. Pixyz's has the gradient.
- The memoizer answered a network call from its first forward pass after the network's weights were swapped
  (``functional_call`` of an ensemble member, a MAML step) or changed in place within one evaluation; a
  ``get_params`` decorated with ``lru_cache_for_sample_dict`` did so across calls. Pixyz's caches do so too, and
  there its numbers are wrong: the references are torch twins.
- ``q.get_log_prob({"x": x[None], "z": z[:, None]}, sum_features=False)`` (log q(z_i | x_j) for every pair, the
  beta-TCVAE idiom) was refused; Pixyz computes it, rightly.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.stateless import _reparametrize_module

from pixyz_harness import assert_same, run_both

B, X, Z = 5, 4, 3


def _encoder_class(Normal):
    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(X, 2 * Z)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 0.05}
    return Q


def _twin_lp(w, x, z):
    h = x @ w["fc.weight"].T + w["fc.bias"]
    return torch.distributions.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 0.05).log_prob(z).sum()


@pytest.mark.parametrize("how", ["functional_call", "assigned"])
def test_standard_prior_with_swapped_grad_constants_has_their_gradient(how):
    def program():
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        z = torch.randn(B, Z)
        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p")
        m = torch.tensor(0.0, requires_grad=True)
        s = torch.tensor(1.0, requires_grad=True)
        if how == "functional_call":
            loss = LogProb(p).mean()
            v = functional_call(loss, {"loss1.p.loc": m, "loss1.p.scale": s}, ({"z": z},))[0]
        else:
            p.loc, p.scale = m, s
            v = p.get_log_prob({"z": z}).mean()
        return v, torch.autograd.grad(v, [m, s])

    ref, ours = run_both(program)
    assert_same(ref, ours)
    # and torch's: d/dm = mean_i sum_d z, d/ds = mean_i sum_d (z^2 - 1)
    torch.manual_seed(0)  # (the harness seeds 0 before each program)
    z = torch.randn(B, Z)
    torch.testing.assert_close(ours[1][0], z.sum(-1).mean())
    torch.testing.assert_close(ours[1][1], (z ** 2 - 1).sum(-1).mean())


def test_memoizer_sees_weights_swapped_within_one_evaluation():
    """An ensemble averaged inside a user loss: each member's weights give its own log-density."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Loss
    import sympy

    torch.manual_seed(0)
    q = _encoder_class(Normal)()
    x, z = torch.rand(B, X), torch.randn(B, Z)
    members = [{k: (i + 1) * v.detach() for k, v in q.named_parameters()} for i in range(3)]

    class EnsembleLogProb(Loss):
        def __init__(self):
            super().__init__(["x", "z"])

        @property
        def _symbol(self):
            return sympy.Symbol("E")

        def forward(self, x_dict, **kwargs):
            vals = []
            for w in members:
                with _reparametrize_module(q, w):
                    vals.append(q.get_log_prob(x_dict).sum())
            return torch.stack(vals), {}

    got = EnsembleLogProb().eval({"x": x, "z": z})
    torch.testing.assert_close(got, torch.stack([_twin_lp(w, x, z) for w in members]))


def test_memoizer_sees_weights_changed_in_place_within_one_evaluation():
    from pyro_dgm.distributions import Normal
    from pyro_dgm.poutine import memoize

    torch.manual_seed(1)
    q = _encoder_class(Normal)()
    x, z = torch.rand(B, X), torch.randn(B, Z)
    with memoize():
        a = q.get_log_prob({"x": x, "z": z}).sum()
        with torch.no_grad():
            q.fc.weight.mul_(2)
        b = q.get_log_prob({"x": x, "z": z}).sum()
    w = {k: v.detach() for k, v in q.named_parameters()}
    torch.testing.assert_close(b, _twin_lp(w, x, z))
    w["fc.weight"] = w["fc.weight"] / 2
    torch.testing.assert_close(a, _twin_lp(w, x, z))


def test_lru_cache_for_sample_dict_sees_swapped_weights_and_maml_gradients():
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.utils import lru_cache_for_sample_dict

    class Cached(_encoder_class(Normal)):
        @lru_cache_for_sample_dict()
        def get_params(self, params_dict={}, **kwargs):
            return super().get_params(params_dict, **kwargs)

    torch.manual_seed(2)
    q = Cached()
    x, z = torch.rand(B, X), torch.randn(B, Z)
    loss = LogProb(q).sum()
    call = lambda w: functional_call(loss, {"loss1.p." + k: v for k, v in w.items()}, ({"x": x, "z": z},))[0]
    w1 = {k: v.detach() for k, v in q.named_parameters()}
    w2 = {k: 2 * v for k, v in w1.items()}
    torch.testing.assert_close(call(w2), _twin_lp(w2, x, z))
    torch.testing.assert_close(call(w1), _twin_lp(w1, x, z))
    # MAML: one inner step with create_graph, then the outer loss on the adapted weights; the meta-gradient
    ws = {k: v.clone().requires_grad_() for k, v in w1.items()}
    wt = {k: v.clone().requires_grad_() for k, v in w1.items()}
    outs = []
    for w, lp in ((ws, call), (wt, lambda w: _twin_lp(w, x, z))):
        g = torch.autograd.grad(-lp(w), list(w.values()), create_graph=True)
        adapted = {k: v - 0.1 * gi for (k, v), gi in zip(w.items(), g)}
        outer = lp(adapted)
        outs.append((outer, torch.autograd.grad(outer, list(w.values()))))
    assert_same(outs[1], outs[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("orient", ["x_first", "z_first"])
def test_pairwise_log_q_by_broadcasting_unsummed(orient):
    """log q(z_i | x_j) for every pair: z (B, 1, Z) under x (1, B, X), and the mirrored orientation."""
    def program():
        import torch
        from pixyz.distributions import Normal
        q = _encoder_class(Normal)()
        x = torch.randn(B, X)
        z = q.sample({"x": x}, return_all=False)["z"].detach()
        xs, zs = (x[None], z[:, None]) if orient == "x_first" else (x[:, None], z[None])
        return q.get_log_prob({"x": xs, "z": zs}, sum_features=False), q.get_params({"x": x}), z

    ref, ours = run_both(program)
    assert_same(ref, ours)
    lp, prm, z = ours
    exact = torch.distributions.Normal(prm["loc"][None], prm["scale"][None]).log_prob(z[:, None])
    torch.testing.assert_close(lp if orient == "x_first" else lp.transpose(0, 1), exact)


# Attack round p109 on the fixes above.

def test_a_forgotten_squeeze_is_refused_unsummed_too():
    """loc of shape [B, 1, D] scoring z of [B, D] (docs/porting.md: refused, Pixyz scores every row against every
    row); unsummed, only a value's feature dim of size 1 may broadcast, not a value that lacks dims."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.utils.checks import ShapeError

    class Dec(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="p")
            self.fc = nn.Linear(X, Z)

        def forward(self, x):
            return {"loc": self.fc(x).unsqueeze(1), "scale": torch.ones(1, 1, Z)}

    p, x, z = Dec(), torch.randn(B, X), torch.randn(B, Z)
    for summed in (True, False):
        with pytest.raises(ShapeError, match="lines up with a feature dim of size 1"):
            p.get_log_prob({"x": x, "z": z}, sum_features=summed)
        with pytest.raises(ShapeError, match="lines up with a feature dim of size 1"):
            LogProb(p, sum_features=summed).eval({"x": x, "z": z})


def test_a_batch_norm_trunk_shared_by_two_encoders_runs_once_per_encoder():
    """The second encoder's forward updates the shared batch norm's statistics: the first encoder's entry still
    answers (its outputs in training mode do not depend on them), so the statistics move as under Pixyz."""
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler, LogProb
        trunk = nn.Sequential(nn.Linear(X, 4), nn.BatchNorm1d(4))
        calls = {"q1": 0, "q2": 0}

        class Q1(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q1")
                self.trunk = trunk

            def forward(self, x):
                calls["q1"] += 1
                return {"loc": self.trunk(x), "scale": torch.ones(1, 4)}

        class Q2(Normal):
            def __init__(self):
                super().__init__(var=["w"], cond_var=["x"], name="q2")
                self.trunk = trunk

            def forward(self, x):
                calls["q2"] += 1
                return {"loc": 2 * self.trunk(x), "scale": torch.ones(1, 4)}

        q1, q2 = Q1(), Q2()
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4], name="p")
        loss = (-LogProb(q1) - LogProb(q2) + KullbackLeibler(q1, prior)).mean()
        v = loss.eval({"x": torch.randn(8, X), "z": torch.randn(8, 4), "w": torch.randn(8, 4)})
        bn = trunk[1]
        return v, dict(calls), bn.num_batches_tracked, bn.running_mean, bn.running_var

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[1] == {"q1": 1, "q2": 1}


def test_lru_cache_for_sample_dict_hits_on_a_network_with_a_batch_norm():
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import Normal
        from pixyz.utils import lru_cache_for_sample_dict
        calls = [0]

        class Enc(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = nn.Sequential(nn.Linear(X, 4), nn.BatchNorm1d(4))

            def forward(self, x):
                calls[0] += 1
                return {"loc": self.net(x), "scale": torch.ones(1, 4)}

            @lru_cache_for_sample_dict()
            def get_params(self, params_dict={}, **kwargs):
                return super().get_params(params_dict, **kwargs)

        q, x = Enc(), torch.randn(8, X)
        s = q.sample({"x": x})
        lps = [q.get_log_prob({"x": x, "z": s["z"]}) for _ in range(2)]
        return calls[0], q.net[1].num_batches_tracked, q.net[1].running_mean, lps

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0] == 1


def _sequential_encoder():
    """q(z|x) whose network is an ``nn.Sequential``, in which layers can be replaced or appended."""
    from pyro_dgm.distributions import Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Sequential(nn.Linear(X, Z))

        def forward(self, x):
            return {"loc": self.net(x), "scale": torch.ones(1, Z)}

    return Q()


def test_memoizer_sees_a_submodule_replaced_within_a_scope():
    from pyro_dgm.poutine import memoize

    def twin(q, x, z):
        return torch.distributions.Normal(q.net(x), 1.0).log_prob(z).sum(-1)

    torch.manual_seed(3)
    q, x, z = _sequential_encoder(), torch.randn(B, X), torch.randn(B, Z)
    with memoize():
        got = [q.get_log_prob({"x": x, "z": z})]
        want = [twin(q, x, z)]
        q.net[0] = nn.Linear(X, Z)  # a submodule replaced
        got.append(q.get_log_prob({"x": x, "z": z}))
        want.append(twin(q, x, z))
        q.net = nn.Sequential(nn.Linear(X, Z))  # the attribute replaced
        got.append(q.get_log_prob({"x": x, "z": z}))
        want.append(twin(q, x, z))
        q.net[0].weight = nn.Parameter(torch.zeros(Z, X))  # a parameter of the new submodule replaced
        got.append(q.get_log_prob({"x": x, "z": z}))
        want.append(twin(q, x, z))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_network_named_model_set_to_none_reads_none():
    """``self.model = nn.Linear(...)``, later ``q.model = None``: torch keeps ``None`` under the submodule's name
    and reads it back; pyro_dgm's entry point ``model`` yields to it (it gave the bound method back)."""
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.model = nn.Linear(X, 2 * Z)

            def forward(self, x):
                h = self.model(x)
                return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 0.05}

        q = Q()
        before = type(q.model).__name__, q.get_log_prob({"x": torch.ones(2, X), "z": torch.zeros(2, Z)})
        q.model = None
        return before, q.model, "model" in q._modules

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[1] is None


# Attack round p111 on c6a4c77.

def test_a_running_mean_assigned_by_the_forward_does_not_rerun_the_network():
    """A hand-written running mean updated out of place (``self.mean = 0.9 * self.mean + ...``): the encoder runs
    once per distinct input in one evaluation, as under Pixyz (c6a4c77 checked the buffers' identity)."""
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler, LogProb

        class RunningNorm(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.register_buffer("mean", torch.zeros(d))
                self.updates = 0

            def forward(self, x):
                self.mean = 0.9 * self.mean + 0.1 * x.detach().mean(0)
                self.updates += 1
                return x - x.mean(0)

        calls = [0]

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = nn.Sequential(nn.Linear(X, 4), RunningNorm(4))

            def forward(self, x):
                calls[0] += 1
                return {"loc": self.net(x), "scale": torch.ones(1, 4)}

        q = Q()
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4], name="p")
        loss = (-LogProb(q) - LogProb(q.replace_var(x="x2", z="z2")) + KullbackLeibler(q, prior)).mean()
        v = loss.eval({"x": torch.randn(8, X), "x2": torch.randn(8, X), "z": torch.randn(8, 4),
                       "z2": torch.randn(8, 4)})
        return v, calls[0], q.net[1].updates, q.net[1].mean

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[1] == 2


@pytest.mark.parametrize("kind", ["spectral_norm", "batch_norm"])
def test_a_deterministic_whose_forward_updates_its_buffers_runs_on_every_use(kind):
    """Pixyz runs a Deterministic on every use: a spectral norm's power iteration (its weight, so the value) and a
    batch norm's statistics move at each run; one reused forward pass gave another loss and other statistics."""
    def program():
        import torch
        from torch import nn
        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, LogProb
        net = (nn.utils.spectral_norm(nn.Linear(X, 4)) if kind == "spectral_norm"
               else nn.Sequential(nn.Linear(X, 4), nn.BatchNorm1d(4)))

        class D(Deterministic):
            def __init__(self):
                super().__init__(var=["h"], cond_var=["x"], name="d")
                self.net = net

            def forward(self, x):
                return {"h": self.net(x)}

        d = D()
        p1 = Normal(loc="h", scale=torch.tensor(1.), var=["y"], cond_var=["h"], name="p1")
        p2 = Normal(loc="h", scale=torch.tensor(2.), var=["y"], cond_var=["h"], name="p2")
        loss = (-Expectation(d, LogProb(p1)) - Expectation(d, LogProb(p2))).mean()
        v = loss.eval({"x": torch.randn(8, X), "y": torch.randn(8, 4)})
        return v, [b.clone() for b in d.buffers()]

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_memoizer_sees_a_layer_appended_and_a_hook_added_within_a_scope():
    from pyro_dgm.poutine import memoize

    torch.manual_seed(4)
    q, x, z = _sequential_encoder(), torch.randn(B, X), torch.randn(B, Z)
    twin = lambda: torch.distributions.Normal(q.net(x), 1.0).log_prob(z).sum(-1)  # noqa: E731
    with memoize():
        torch.testing.assert_close(q.get_log_prob({"x": x, "z": z}), twin())
        q.net.append(nn.Linear(Z, Z))
        torch.testing.assert_close(q.get_log_prob({"x": x, "z": z}), twin())
        q.net[0].register_forward_hook(lambda m, i, o: 2 * o)
        torch.testing.assert_close(q.get_log_prob({"x": x, "z": z}), twin())
