"""Forty-eighth round: the weights objects of the products and mixtures of experts given or assigned in other forms
(an ``nn.Parameter``, a longer list, a ``(k, 1)`` tensor, ``None``, a string; probe p305), and the state dicts of the
Monte Carlo ``KullbackLeibler`` and ``Entropy`` terms, loaded across the two libraries (probe p307), under Pixyz and
here (:mod:`pixyz_harness`)."""
from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pixyz, run_pyro_dgm


def _experts() -> Any:
    """Two constant-scale experts of ``z`` and the values they are given (Pixyz's imports when called)."""
    import torch

    from pixyz.distributions import Normal

    ex = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="qx", features_shape=[2])
    ey = Normal(loc="y", scale=torch.tensor(0.5), var=["z"], cond_var=["y"], name="qy", features_shape=[2])
    return ex, ey, {"x": torch.tensor([[3., 1.]]), "y": torch.tensor([[1., -1.]])}


def _closed_form(w: list[float]) -> torch.Tensor:
    """The weighted product's mean: precisions ``w0 * 1`` (the standard prior), ``w1 * 1`` and ``w2 * 4``."""
    x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
    return (w[1] * x + 4 * w[2] * y) / (w[0] + w[1] + 4 * w[2])


@pytest.mark.parametrize("cls", ["ProductOfNormal", "MixtureOfNormal"])
def test_an_nn_parameter_given_as_the_weights_is_the_weights_as_under_pixyz(cls: str) -> None:
    """Probe p305: an ``nn.Parameter`` given to the constructor was copied into a buffer once: not a parameter of the
    product (Pixyz's ``named_parameters()`` lists it, so an optimizer trains it) and a change made to it afterwards
    was not seen (Pixyz's loc [1.9, 0.1] after ``w[1] = 5.``; here it stayed [1.43, -0.29])."""
    def program() -> Any:
        import torch
        from torch import nn

        import pixyz.distributions as D

        ex, ey, values = _experts()
        if cls == "ProductOfNormal":
            w = nn.Parameter(torch.tensor([1., 2., 1.]))
            d = D.ProductOfNormal([ex, ey], weight_modalities=w)
            first = d.get_params(values)["loc"]
            with torch.no_grad():
                w[1] = 5.
            again = {k: v.clone() for k, v in values.items()}  # (Pixyz's cache answers the same tensors)
            return [n for n, _ in d.named_parameters()], first, d.get_params(again)["loc"]
        w = nn.Parameter(torch.tensor([0.25, 0.75]))
        d = D.MixtureOfNormal([ex, ey], weight_modalities=w)
        return ([n for n, _ in d.named_parameters()],)

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0] == ["weight_modalities"]
    if cls == "ProductOfNormal":
        torch.testing.assert_close(ours[1], _closed_form([1., 2., 1.]))
        torch.testing.assert_close(ours[2], _closed_form([1., 5., 1.]))


@pytest.mark.parametrize("case", ["longer list", "longer array", "(3, 1) tensor", "(3, 1) tensor changed"])
def test_weights_assigned_in_other_forms_give_pixyzs_numbers(case: str) -> None:
    """Probe p305: a longer list or array assigned was refused (Pixyz reads its first weights, as it reads a longer
    tensor or a list that grew); a ``(3, 1)`` tensor assigned became the buffer with that shape and the next use
    raised Python's bare ``float() argument must be ... not 'list'`` (Pixyz reads ``w[i]``, one weight each)."""
    def program() -> Any:
        import numpy as np
        import torch

        from pixyz.distributions import ProductOfNormal

        ex, ey, values = _experts()
        poe = ProductOfNormal([ex, ey], weight_modalities=[1., 1., 1.])
        out = [poe.get_params(values)["loc"]]
        if case == "longer list":
            poe.weight_modalities = [1., 2., 1., 7.]
        elif case == "longer array":
            poe.weight_modalities = np.array([1., 2., 1., 7.])
        else:
            t = torch.tensor([[1.], [2.], [1.]])
            poe.weight_modalities = t
            if case == "(3, 1) tensor changed":
                out.append(poe.get_params({k: v.clone() for k, v in values.items()})["loc"])
                t[1] = 5.
        out.append(poe.get_params({k: v.clone() for k, v in values.items()})["loc"])
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours[-1], _closed_form([1., 5. if case.endswith("changed") else 2., 1.]))


@pytest.mark.parametrize("value", ["None", "string"])
def test_weights_assigned_that_are_no_weights_raise_pixyzs_error_class_naming_the_product(value: str) -> None:
    """Probe p305: ``poe.weight_modalities = None`` gave ``AttributeError: 'NoneType' object has no attribute
    'requires_grad'`` at the next use (Pixyz: a ``TypeError`` there); a string assigned raised a bare ``TypeError``
    (Pixyz: ``ValueError``). Both are an ``ArgumentError`` (a ``TypeError`` and a ``ValueError``) naming the
    product now."""
    def program() -> Any:
        from pixyz.distributions import ProductOfNormal

        ex, ey, values = _experts()
        poe = ProductOfNormal([ex, ey], weight_modalities=[1., 1., 1.])
        poe.get_params(values)
        poe.weight_modalities = None if value == "None" else "abc"
        poe.get_params({k: v.clone() for k, v in values.items()})  # (Pixyz's cache answers the same tensors)

    ref_cls, our_cls = raises_same(program)
    assert issubclass(our_cls, ref_cls)
    with pytest.raises(ref_cls, match=r"ProductOfNormal p\(z\|x,y\).*weight_modalities"):
        run_pyro_dgm(program)


def _mc_terms() -> dict[str, Any]:
    """A Monte Carlo KL, a Monte Carlo entropy and an ELBO-like formula holding the first (Pixyz's imports when
    called), of an encoder with a network."""
    import torch
    from torch import nn

    import pixyz.distributions as D
    import pixyz.losses as L

    class Q(D.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x: Any) -> Any:
            loc, s = self.fc(x).chunk(2, -1)
            return {"loc": loc, "scale": nn.functional.softplus(s) + 0.1}

    class P(D.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z: Any) -> Any:
            return {"probs": torch.sigmoid(self.fc(z))}

    q = Q()
    prior = D.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    return {"kl": L.KullbackLeibler(q, prior, analytical=False), "entropy": L.Entropy(q, analytical=False),
            "elbo": (-L.LogProb(P()).expectation(q) + L.KullbackLeibler(q, prior, analytical=False)).mean()}


def _saved(states: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(states, buf)
    return buf.getvalue()


@pytest.mark.parametrize("direction", ["pixyz to pyro_dgm", "pyro_dgm to pixyz"])
def test_monte_carlo_terms_state_dicts_load_across_the_libraries_with_their_numbers(direction: str) -> None:
    """Probe p307: the state dict of a Monte Carlo ``KullbackLeibler`` or ``Entropy`` term (and of a formula holding
    one) had other keys than Pixyz's objects (``p.*``, ``q.*`` and the estimate's ``_dgm_mc.*``, where Pixyz's
    ``Expectation`` has ``p.*`` and ``f.*``, its ``NegLoss`` ``loss1.*``): neither library loaded the other's with
    ``strict=True``. The keys are Pixyz's now, and the loaded terms give the saving side's values."""
    def save() -> Any:
        terms = _mc_terms()
        return {k: (list(t.state_dict()), t.state_dict()) for k, t in terms.items()}

    def load(blob: bytes) -> Any:
        def program() -> Any:
            import torch

            states = torch.load(io.BytesIO(blob))
            torch.manual_seed(5)  # (other weights than the saved ones)
            terms = _mc_terms()
            x = (torch.randn(3, 4, generator=torch.Generator().manual_seed(2)) > 0).float()
            out = {}
            for k, t in terms.items():
                t.load_state_dict(states[k], strict=True)
                torch.manual_seed(4)
                out[k] = t.eval({"x": x})
            return out
        return program

    def values(states: dict[str, Any]) -> Any:
        def program() -> Any:
            import torch

            terms = _mc_terms()
            x = (torch.randn(3, 4, generator=torch.Generator().manual_seed(2)) > 0).float()
            out = {}
            for k, t in terms.items():
                t.load_state_dict(states[k])
                torch.manual_seed(4)
                out[k] = t.eval({"x": x})
            return out
        return program

    ref, ours = run_pixyz(save), run_pyro_dgm(save)
    assert {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in ref.items()}  # Pixyz's keys, in its order
    if direction == "pixyz to pyro_dgm":
        saved = {k: v[1] for k, v in ref.items()}
        loaded, expected = run_pyro_dgm(load(_saved(saved))), run_pixyz(values(saved))
    else:
        saved = {k: v[1] for k, v in ours.items()}
        loaded, expected = run_pixyz(load(_saved(saved))), run_pyro_dgm(values(saved))
    assert_same(expected, loaded)


def test_an_older_pyro_dgm_state_dict_of_a_monte_carlo_term_still_loads() -> None:
    """A state dict saved before the keys were Pixyz's (the term's ``p.*`` and ``q.*`` and the estimate's
    ``_dgm_mc.*``) loads as it is, with the same values."""
    from pyro_dgm.losses import KullbackLeibler

    from pixyz_harness import renamed_import

    with renamed_import():
        torch.manual_seed(0)
        kl = _mc_terms()["kl"]
        old = {**{f"p.{k}": v for k, v in kl.p.state_dict().items()},
               **{f"q.{k}": v for k, v in kl.q.state_dict().items()},
               **{f"_dgm_mc.{k}": v for k, v in kl._dgm_mc.state_dict().items()}}
        torch.manual_seed(1)
        other = _mc_terms()["kl"]
        other.load_state_dict(old, strict=True)
    assert isinstance(other, KullbackLeibler)
    for a, b in zip(kl.parameters(), other.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("how", ["eval", "Model.train"])
def test_backward_hooks_on_loss_terms_fire_and_change_the_gradient_as_under_pixyz(how: str) -> None:
    """Probe p309: a term's ``register_full_backward_hook``/``register_full_backward_pre_hook`` (and torch's global
    ones) never fired here (a term ran its ``forward`` directly unless it had forward hooks), so a pre-hook that
    scales the gradient by 10 left it as it was (mu.grad -0.333 where Pixyz's is -3.333)."""
    def program() -> Any:
        import torch
        import torch.nn.modules.module as torch_module

        from pixyz.distributions import Normal
        from pixyz.models import Model

        p = Normal(loc="mu", scale=torch.tensor(1.), var=["x"], cond_var=["mu"])
        inner = -p.log_prob()
        loss = inner.mean()
        seen: list[Any] = []
        loss.register_full_backward_hook(lambda m, gi, go: seen.append(("hook", [None if g is None else float(g)
                                                                                 for g in go])))
        inner.register_full_backward_pre_hook(lambda m, go: (go[0] * 10,) + tuple(go[1:]))
        found: list[str] = []
        handle = torch_module.register_module_full_backward_hook(lambda m, gi, go: found.append(type(m).__name__))
        try:
            if how == "eval":
                mu = torch.zeros(3, 1, requires_grad=True)
                loss.eval({"x": torch.ones(3, 1), "mu": mu}).backward()
                return seen, sorted(found), mu.grad
            mu = torch.nn.Parameter(torch.zeros(3, 1))
            p.register_parameter("w", mu)  # (Model's optimizer takes p's parameters)
            model = Model(loss, distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
            model.train({"x": torch.ones(3, 1), "mu": mu})
            return seen, sorted(found), mu.detach().clone()
        finally:
            handle.remove()

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0] and ours[1]
    if how == "eval":
        torch.testing.assert_close(ours[2], torch.full((3, 1), -10 / 3))  # d/dmu of mean((mu - 1)^2 / 2), times 10


def test_a_monte_carlo_terms_missing_and_unexpected_keys_are_named_as_in_the_state_dict_given() -> None:
    """Probe p308: ``load_state_dict(strict=False)`` of a formula holding Monte Carlo terms reported the keys under the
    estimate's inner names (``loss1.loss1._dgm_mc.f.loss1.p.fc.bias``, ``_dgm_mc.bogus.w``), which no state dict
    holds; Pixyz's names are those of the state dict given."""
    def program() -> Any:
        terms = _mc_terms()
        out = []
        for f in (terms["elbo"], terms["kl"]):
            states = f.state_dict()
            dropped = sorted(states)[0]
            del states[dropped]
            states["bogus.w"] = states[sorted(states)[0]]
            result = f.load_state_dict(states, strict=False)
            out.append((dropped, list(result.missing_keys), list(result.unexpected_keys)))
        return out

    ref, ours = run_both(program)
    assert ours == ref
    assert all(missing == [dropped] for dropped, missing, _ in ours)


def test_the_distribution_a_monte_carlo_kl_draws_from_is_replaced_as_pixyzs_expectations() -> None:
    """Probe p310: ``kl.p = r`` on ``KullbackLeibler(q, p, analytical=False)`` was ignored (0.50 where Pixyz's
    ``Expectation``, which draws from ``r`` now, gives E_r[log q - log p] = 3 - 1/2), and the state dict's ``p.*``
    (the estimate's) held the old distribution's weights while ``kl.p`` held the new one's."""
    def program() -> Any:
        import torch
        from torch import nn

        import pixyz.distributions as D
        import pixyz.losses as L

        class Q(D.Normal):
            def __init__(self, c: float, name: str) -> None:
                super().__init__(var=["z"], cond_var=["x"], name=name)
                self.fc = nn.Linear(1, 1)
                nn.init.constant_(self.fc.weight, c)
                nn.init.zeros_(self.fc.bias)

            def forward(self, x: Any) -> Any:
                return {"loc": self.fc(x), "scale": torch.ones_like(x)}

        q, p, r = Q(1., "q"), Q(0., "p"), Q(3., "r")
        kl = L.KullbackLeibler(q, p, analytical=False, sample_shape=[4000])
        x = torch.ones(1, 1)
        torch.manual_seed(0)
        before = kl.eval({"x": x})
        kl.p = r
        torch.manual_seed(0)
        return before, kl.eval({"x": x}), str(kl), {k: v.clone() for k, v in kl.state_dict().items()}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert float(ours[1]) == pytest.approx(2.5, abs=0.1)  # (1/sqrt(4000) draws of a unit-variance integrand: 0.016)
    assert float(ours[3]["p.fc.weight"]) == 3.0


def test_a_monte_carlo_terms_size_mismatch_names_the_key_of_the_state_dict_given() -> None:
    """Probe p310: a tensor of another shape in a Monte Carlo term's state dict was reported under the estimate's
    inner key (``size mismatch for _dgm_mc.f.loss1.p.l.bias``), which no state dict holds; Pixyz names the key given,
    once."""
    def program() -> Any:
        import torch

        kl = _mc_terms()["kl"]
        states = kl.state_dict()
        key = next(k for k in states if k.startswith("f.loss1.") and k.endswith("bias"))
        states[key] = torch.zeros(7)
        try:
            kl.load_state_dict(states)
        except RuntimeError as e:
            return [line.strip() for line in str(e).splitlines()[1:]]
        return None

    ref, ours = run_both(program)
    assert ours == ref and len(ours) == 1 and "size mismatch for f.loss1.p.fc.bias:" in ours[0]


def test_reinforce_without_a_baseline_has_pixyzs_state_dict_and_values() -> None:
    """``REINFORCE(p, f)`` without a baseline held no ``ValueLoss(0)`` here (its keys were not Pixyz's, whose
    default baseline is one, so neither library loaded the other's state dict of it); its value is the same."""
    def program() -> Any:
        import torch
        from torch import nn

        import pixyz.distributions as D
        import pixyz.losses as L

        class R(D.Normal):
            def __init__(self) -> None:
                super().__init__(var=["a"], name="r")
                self.fc = nn.Linear(1, 1)

            def forward(self) -> Any:
                return {"loc": self.fc.weight.reshape(1), "scale": torch.ones(1)}

        p = D.Bernoulli(probs=torch.tensor([0.3]), var=["a"])
        loss = L.REINFORCE(p, R().log_prob(), sample_shape=[50])
        torch.manual_seed(1)
        return list(loss.state_dict()), str(loss), loss.eval()

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_a_variable_named_module_reaches_a_network_that_reads_its_inputs_by_name_as_under_pixyz() -> None:
    """Probe p313: a variable named ``module`` given to a ``forward(self, **kw)`` raised ``run_network() got
    multiple values for argument 'module'`` (the network's parameter name in pyro_dgm's call path); Pixyz runs it."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["module"], name="q")
                self.fc = nn.Linear(3, 4)

            def forward(self, **kw: Any) -> Any:
                h = self.fc(kw["module"])
                return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

        q = Q()
        prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p_{prior}", features_shape=[2])
        x = torch.randn(4, 3)
        z = q.sample({"module": x})["z"]
        return z, q.get_log_prob({"module": x, "z": z}), KullbackLeibler(q, prior).mean().eval({"module": x.clone()})

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("how", ["add_module", "register_module", "del", "q replaced"])
def test_a_monte_carlo_kls_operands_replaced_in_other_ways_as_under_pixyz(how: str) -> None:
    """Probe p312: ``kl.add_module("p", r)`` and ``register_module`` on a Monte Carlo KL left the estimate drawing
    from the old ``p`` (1.3331 where Pixyz gives -11.0068); ``del kl.p`` went on evaluating (Pixyz: an
    ``AttributeError``); ``kl.q = r`` left ``q.*`` out of the state dict (Pixyz's object registers it)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
        q = Normal(loc=torch.tensor(1.), scale=torch.tensor(2.), var=["z"], name="q")
        r = Normal(loc=torch.tensor(3.), scale=torch.tensor(0.5), var=["z"], name="r")
        kl = KullbackLeibler(p, q, analytical=False, sample_shape=[500])
        if how == "del":
            del kl.p
            try:
                kl.eval()
            except AttributeError:
                return "AttributeError"
            return "ran"
        if how == "q replaced":
            kl.q = r
        else:
            getattr(kl, how)("p", r)
        torch.manual_seed(0)
        return kl.eval(), str(kl), {k: v.clone() for k, v in kl.state_dict().items()}

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_an_operand_replaced_in_a_shallow_copy_is_the_originals_too_as_under_pixyz() -> None:
    """Probe p312: ``copy.copy`` of a loss shares ``nn.Module``'s registry of modules, under Pixyz and here, so
    ``B.p = r`` in the copy replaces ``p`` in the original too; pyro_dgm's original went on evaluating ``p`` (0.5
    where Pixyz gives 2.0) while its state dict held ``r``'s."""
    def program() -> Any:
        import copy

        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        p = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["z"], name="p")
        q = Normal(loc=torch.tensor([1.]), scale=torch.tensor([1.]), var=["z"], name="q")
        r = Normal(loc=torch.tensor([3.]), scale=torch.tensor([1.]), var=["z"], name="r")
        a = KullbackLeibler(p, q)
        before = a.eval()
        b = copy.copy(a)
        b.p = r
        out = [before, a.eval(), b.eval(), a.p.name, a.state_dict()["p.loc"].clone()]
        a.q = p
        return out + [a.eval(), b.eval()]

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("case", ["np.float64 read", "np.int64 key", "np.str_ option", "extra keys", "scored"])
def test_numpy_scalars_and_extra_numpy_values_are_handed_on_as_under_pixyz(case: str) -> None:
    """Probe p314: every numpy value of a values dict became a tensor, numpy scalars too and values of keys no
    distribution reads: a ``forward`` testing ``isinstance(temp, float)`` of an ``np.float64`` took the other branch
    (other log-densities, silently), an ``np.int64`` used as a key of an ``nn.ModuleDict`` raised a ``KeyError``, an
    ``np.str_`` option and an extra array of strings were refused, and an ``np.float64`` scored value gave a float64
    log-density (Pixyz's: the default dtype, as for a Python number)."""
    def program() -> Any:
        import numpy as np
        import torch
        from torch import nn

        from pixyz.distributions import Bernoulli, Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x", "t", "mode"], name="q")
                self.heads = nn.ModuleDict({str(i): nn.Linear(3, 2) for i in range(3)})

            def forward(self, x: Any, t: Any, mode: Any) -> Any:
                h = self.heads[str(t)](x)
                scale = mode if isinstance(mode, float) else 1.0
                return {"loc": h * (2 if mode == "double" else 1), "scale": torch.ones_like(h) * scale}

        q = Q()
        x, z = torch.randn(2, 3), torch.zeros(2, 2)
        if case == "scored":
            lp = Bernoulli(probs=torch.tensor([0.3]), var=["x"]).get_log_prob({"x": np.float64(1.)})
            return lp, lp.dtype
        given = {"np.float64 read": {"t": 1, "mode": np.float64(0.5)},
                 "np.int64 key": {"t": np.arange(3)[1], "mode": "double"},
                 "np.str_ option": {"t": 1, "mode": np.array(["plain", "double"])[1]},
                 "extra keys": {"t": 1, "mode": "double", "meta": np.array(["a.png", "b.png"]),
                                "n": np.int64(3)}}[case]
        out = q.sample({"x": x, **given})
        lp = q.get_log_prob({"x": x, "z": z, **given})
        return lp, sorted(out), {k: type(v).__name__ for k, v in out.items() if k not in ("x", "z")}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("size", [-1, True])
def test_a_cache_size_that_functools_reads_is_taken_as_under_pixyz(size: Any) -> None:
    """Probe p315: ``set_cache_maxsize(-1)`` and ``set_cache_maxsize(True)`` were refused; Pixyz keeps the value
    and ``functools.lru_cache`` reads it (a negative size as 0, ``True`` as 1)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.utils import cache_maxsize, set_cache_maxsize

        old = cache_maxsize()
        set_cache_maxsize(size)
        try:
            p = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["x"])
            return cache_maxsize(), p.get_log_prob({"x": torch.zeros(1, 1)})
        finally:
            set_cache_maxsize(old)

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("how", ["copy.copy", "named"])
def test_a_copy_of_a_monte_carlo_kl_leaves_the_estimate_to_both_as_under_pixyz(how: str) -> None:
    """Probe p316: after ``copy.copy`` (or ``.named()``, which copies) of a Monte Carlo KL, ``c.p = q2`` no longer
    changed what either draws from (2.05 where Pixyz's gives -8.46 for both), ``sample_shape`` raised an
    ``AttributeError`` and ``load_state_dict(l.state_dict())`` of the original was refused: the shallow copy had
    taken the estimate out of the terms' attributes."""
    def program() -> Any:
        import copy

        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        q = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["z"], name="q")
        q2 = Normal(loc=torch.tensor([4.]), scale=torch.tensor([1.]), var=["z"], name="r")
        prior = Normal(loc=torch.tensor([1.]), scale=torch.tensor([2.]), var=["z"], name="p")
        kl = KullbackLeibler(q, prior, analytical=False, sample_shape=[7])
        c = kl.named("kl") if how == "named" and hasattr(kl, "named") else copy.copy(kl)  # (Pixyz has no named)
        kl.load_state_dict(kl.state_dict())
        shape = c.sample_shape, kl.sample_shape, c.reparam
        c.p = q2
        torch.manual_seed(0)
        first = kl.eval()
        torch.manual_seed(0)
        return shape, first, c.eval(), sorted(kl.state_dict())

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_a_class_attribute_named_like_an_operand_is_what_the_term_reads_as_under_pixyz() -> None:
    """Probe p316: a subclass declaring ``p = None`` at class level then setting ``self.p`` to a distribution reads
    ``None`` under Pixyz (``nn.Module`` keeps the module in its registry, and the class attribute is found first);
    here the term read the module (its copy kept beside the registry for speed), and a shallow copy of it the
    class attribute: two numbers for one program."""
    def program() -> Any:
        import copy

        import torch

        from pixyz.distributions import Normal
        from pixyz.losses.losses import Loss

        class Odd(Loss):
            p = None

            def __init__(self, p: Any) -> None:
                super().__init__(["x"])
                self.p = p

            @property
            def _symbol(self) -> Any:
                import sympy

                return sympy.Symbol("L")

            def forward(self, x_dict: Any, **kwargs: Any) -> Any:
                if self.p is None:
                    return torch.zeros(1), {}
                return self.p.get_log_prob(x_dict), {}

        p = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["x"])
        loss = Odd(p)
        x = {"x": torch.ones(1, 1)}
        return loss.eval(x), copy.copy(loss).eval(x)

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("size", ["np.int64", "2.5"])
def test_a_cache_size_pixyz_keeps_is_kept(size: str) -> None:
    """Probe p316: ``set_cache_maxsize(np.int64(20))`` and ``(2.5)`` were refused at once; Pixyz keeps them (its
    built-in cache was sized at import; a later ``lru_cache_for_sample_dict`` refuses 2.5 with a ``TypeError``)."""
    def program() -> Any:
        import numpy as np
        import torch

        from pixyz.distributions import Normal
        from pixyz.utils import cache_maxsize, lru_cache_for_sample_dict, set_cache_maxsize

        old = cache_maxsize()
        set_cache_maxsize(np.int64(20) if size == "np.int64" else 2.5)
        try:
            p = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["x"])
            out = [cache_maxsize(), p.get_log_prob({"x": torch.zeros(1, 1)})]
            try:
                lru_cache_for_sample_dict()
                out.append("decorated")
            except TypeError:
                out.append("TypeError")
            return out
        finally:
            set_cache_maxsize(old)

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_reinforce_of_a_number_as_under_pixyz() -> None:
    """Probe p317: ``REINFORCE(q, 3)`` raised Python's bare ``'float' object has no attribute 'detach'`` (the
    default baseline was the number 0, so the reward minus it was a number); Pixyz's default baseline is a
    ``ValueLoss(0)``, and the term evaluates."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import REINFORCE

        q = Normal(loc="x", scale=torch.tensor([1.]), var=["z"], cond_var=["x"], name="q")
        loss = REINFORCE(q, 3, sample_shape=[4])
        torch.manual_seed(0)
        return str(loss), loss.eval({"x": torch.zeros(3, 1)})

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("call", ["Expectation", "ConstantVar", "ConstantVar dict", "IterativeLoss",
                                  "DataParalleledLoss", "AdversarialJensenShannon"])
def test_arguments_that_are_no_losses_raise_pixyzs_attribute_error_class(call: str) -> None:
    """Probe p317: these constructors raised a plain ``TypeError`` for an argument of the wrong kind, where Pixyz's
    code fails with an ``AttributeError`` reading it (``'int' object has no attribute 'input_var'``): an
    ``ArgumentError`` now, which is both, and names the class and the argument."""
    def program() -> Any:
        import torch

        import pixyz.losses as L
        from pixyz.distributions import Normal

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], features_shape=[2], name="q")
        lp = L.LogProb(p)
        {"Expectation": lambda: L.Expectation(p, 3), "ConstantVar": lambda: L.ConstantVar(3, {}),
         "ConstantVar dict": lambda: L.ConstantVar(lp, None),
         "IterativeLoss": lambda: L.IterativeLoss(3, series_var=["z"]),
         "DataParalleledLoss": lambda: L.DataParalleledLoss(3),
         "AdversarialJensenShannon": lambda: L.AdversarialJensenShannon(q, p, 3)}[call]()

    ref_cls, our_cls = raises_same(program)
    assert ref_cls is AttributeError and issubclass(our_cls, AttributeError)
    with pytest.raises(AttributeError, match=call.split()[0]):
        run_pyro_dgm(program)


@pytest.mark.parametrize("how", ["kl.f", "kl.sample_shape", "entropy.loss1", "expectation.sample_shape"])
def test_the_parts_of_a_monte_carlo_estimate_set_after_construction_as_under_pixyz(how: str) -> None:
    """Probe p318: Pixyz's Monte Carlo KL is an ``Expectation`` and its Monte Carlo entropy a ``NegLoss``, so
    ``kl.f = LogProb(r)``, ``kl.sample_shape = ...`` and ``h.loss1 = ...`` change what they compute; here they were
    ignored (``kl.f``: 0.438 where Pixyz gives -5.88; ``sample_shape`` read back but one draw was taken), and an
    ``Expectation``'s ``sample_shape`` set after construction was ignored too (its draws were counted once)."""
    def program() -> Any:
        import torch

        import pixyz.losses as L
        from pixyz.distributions import Normal

        q = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["z"], name="q")
        p = Normal(loc=torch.tensor([1.]), scale=torch.tensor([2.]), var=["z"], name="p")
        r = Normal(loc=torch.tensor([3.]), scale=torch.tensor([0.5]), var=["z"], name="r")
        if how.startswith("kl"):
            term = L.KullbackLeibler(q, p, analytical=False)
        elif how.startswith("entropy"):
            term = L.Entropy(q, analytical=False)
        else:
            term = L.Expectation(q, L.LogProb(p))
        if how == "kl.f":
            term.f = L.LogProb(r)
        elif how == "entropy.loss1":
            term.loss1 = L.Expectation(q, L.LogProb(p))
        else:
            term.sample_shape = torch.Size([50])
        torch.manual_seed(0)
        return term.eval(), str(term), sorted(term.state_dict())

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("how", ["copy.copy", "named"])
def test_an_adversarial_terms_discriminator_is_checked_after_a_copy(how: str) -> None:
    """Probe p318: after ``copy.copy`` (or ``.named()``) of an adversarial term the discriminator's checks were
    skipped, in the original too: a discriminator of the wrong variables set then gave a bare ``KeyError: 'y'``, and
    ``loss.d = None`` an ``AttributeError`` about ``_dgm_d``; as without a copy, they are named."""
    import copy

    from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
    from pyro_dgm.losses import AdversarialJensenShannon

    class Disc(Deterministic):
        def __init__(self, cond: str) -> None:
            super().__init__(var=["t"], cond_var=[cond], name="d")
            self.fc = torch.nn.Linear(1, 1)

        def forward(self, **kw: Any) -> Any:
            return {"t": torch.sigmoid(self.fc(next(iter(kw.values()))))}

    p_data = EmpiricalDistribution(var=["x"], name="p_{data}")
    p = Normal(loc=torch.tensor([1.]), scale=torch.tensor([1.]), var=["x"], name="p")
    loss = AdversarialJensenShannon(p_data, p, discriminator=Disc("x"))
    c = loss.named("adv") if how == "named" else copy.copy(loss)
    for term in (loss, c):
        with pytest.raises(ValueError, match=r"AdversarialJensenShannon.*conditioned on \['y'\]"):
            term.d = Disc("y")
    loss.d = None
    with pytest.raises(AttributeError, match=r"AdversarialJensenShannon.*no discriminator d \(it was set to None\)"):
        c.eval({"x": torch.zeros(2, 1)})


def test_a_reinforce_baseline_of_the_wrong_kind_raises_pixyzs_value_error() -> None:
    """Probe p318: ``REINFORCE(p, f, b="b")`` raised a plain ``TypeError`` after the number baseline became a
    ``ValueLoss`` (Pixyz: ``ValueError: <class 'str'> cannot be operated with ...``)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import REINFORCE, LogProb

        q = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["z"], name="q")
        REINFORCE(q, LogProb(q), b="b")

    ref_cls, our_cls = raises_same(program)
    assert ref_cls is ValueError and issubclass(our_cls, ValueError)


def _counting_feature_program() -> Any:
    """A ``Deterministic`` whose output reads a count of its calls (an annealing schedule kept on the module), read
    by two terms that each run it under Pixyz; its value, three ``Model.train`` steps and the count."""
    import torch
    from torch import nn

    import pixyz.distributions as D
    import pixyz.losses as L
    from pixyz.models import Model

    class Feat(D.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")
            self.fc = nn.Linear(3, 2)
            self.calls = 0

        def forward(self, x: Any) -> Any:
            self.calls += 1
            return {"h": self.fc(x) * self.calls}

    class Qz(D.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["h"], name="q")

        def forward(self, h: Any) -> Any:
            return {"loc": h, "scale": torch.ones_like(h)}

    f, qz = Feat(), Qz()
    prior = D.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p0")
    loss = L.KullbackLeibler(qz, prior).expectation(f).mean() + L.KullbackLeibler(qz, prior).expectation(f).mean()
    x = torch.randn(4, 3)
    first = loss.eval({"x": x})
    f.calls = 0
    model = Model(loss, distributions=[f, qz], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0},
                  **_COMPILE[0])
    return first, [model.train({"x": x}) for _ in range(3)], f.calls


_COMPILE: list[dict[str, Any]] = [{}]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_deterministic_whose_output_reads_its_own_attributes_runs_at_each_use_as_under_pixyz(compiled: bool) -> None:
    """Probe p319: a ``Deterministic`` counting its calls in ``self.calls`` and scaling its output by the count ran
    once per evaluation here (its output reused: 0.708 where Pixyz, which runs it at each use, gives 1.770), and
    compiled gave a third set of numbers (the first, eager, step reused it; the traced ones did not). A forward that
    rebinds an attribute of its own now runs at each use, eager and compiled."""
    ref = run_pixyz(_counting_feature_program)
    _COMPILE[0] = {"compile": {"backend": "eager"}} if compiled else {}
    try:
        ours = run_pyro_dgm(_counting_feature_program)
    finally:
        _COMPILE[0] = {}
    assert_same(ref, ours)
    assert ours[2] == 6


@pytest.mark.parametrize("how", ["copy sample_shape", "copy reparam", "subclass num_samples", "add_module f",
                                 "del f", "module set since"])
def test_a_monte_carlo_terms_attributes_at_the_edges_as_under_pixyz(how: str) -> None:
    """Probe p320: ``c.sample_shape``/``c.reparam`` set on a shallow copy of a Monte Carlo KL reached the original
    (Pixyz's are the copy's plain attributes); an ``Expectation`` subclass keeping its own ``num_samples`` changed
    the number of draws (Pixyz's has no such attribute); ``kl.add_module("f", ...)`` and ``del kl.f`` were refused;
    a module set on the term since that holds the estimate's tensors (``kl.enc = q``) lost its state-dict keys."""
    def program() -> Any:
        import copy

        import torch
        from torch import nn

        import pixyz.losses as L
        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc = nn.Linear(1, 1)

            def forward(self, x: Any) -> Any:
                return {"loc": self.fc(x), "scale": torch.ones_like(x)}

        q = Q()
        p = Normal(loc=torch.tensor([1.]), scale=torch.tensor([2.]), var=["z"], name="p")
        r = Normal(loc=torch.tensor([3.]), scale=torch.tensor([0.5]), var=["z"], name="r")
        x = {"x": torch.ones(2, 1)}
        kl = L.KullbackLeibler(q, p, analytical=False, sample_shape=[5])
        if how.startswith("copy"):
            c = copy.copy(kl)
            setattr(c, how.split()[1], torch.Size([40]) if how.endswith("shape") else False)
            torch.manual_seed(0)
            a = kl.eval(x)
            torch.manual_seed(0)
            return a, c.eval(x), kl.sample_shape, kl.reparam
        if how == "subclass num_samples":
            class E(L.Expectation):
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    self.num_samples = 3

            e = E(q, L.LogProb(p), sample_shape=[7])
            torch.manual_seed(0)
            return e.eval(x), e.sample_shape
        if how == "add_module f":
            kl.add_module("f", L.LogProb(r) - L.LogProb(p))
        elif how == "del f":
            del kl.f
            kl.f = L.LogProb(r)
        else:
            kl.enc = q
        torch.manual_seed(0)
        return kl.eval(x), str(kl), sorted(kl.state_dict())

    ref, ours = run_both(program)
    assert_same(ref, ours)
