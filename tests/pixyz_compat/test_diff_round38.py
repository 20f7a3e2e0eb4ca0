"""Thirty-eighth round: methods set on one distribution (``q.get_log_prob = fn``, a later notebook cell), under
Pixyz and here (:mod:`pixyz_harness`), against closed forms and plain-Pyro twins.

Pixyz's graph calls ``q.get_log_prob(...)`` and ``q.sample(...)`` and its ``set_dist`` calls ``q.get_params(...)``,
which find a function set on the instance before the class's method. Here such a function was used by ``q``'s own
public call only: a product, a loss term, a mixture, a KL, and Pyro runs kept the class's method (the product's
log-density without the user's shift, a KL from the network's parameters instead of the user's).
"""
from __future__ import annotations

import copy
import pickle
from typing import Any

import pyro
import pytest
import torch
from pyro import poutine

from pixyz_harness import assert_same, run_both


def _shifted_log_prob_program(where: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import MixtureModel, Categorical, Normal
        from pixyz.losses import Expectation, LogProb

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = torch.nn.Linear(2, 2)

            def forward(self, x: Any) -> Any:
                return {"loc": self.lin(x), "scale": torch.ones_like(x)}

        q = Q()
        x, z = torch.randn(3, 2), torch.randn(3, 2)
        orig = q.get_log_prob
        q.get_log_prob = lambda x_dict, **kw: orig(x_dict, **kw) - 1.
        prior = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="px")
        if where == "public":
            return q.get_log_prob({"x": x, "z": z})
        if where == "logprob":
            return LogProb(q).eval({"x": x, "z": z})
        if where == "product":
            return (q * prior).get_log_prob({"x": x, "z": z})
        if where == "expectation":
            p = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
            return Expectation(p, LogProb(q)).eval({"x": x})
        if where == "replace_var":
            return q.replace_var(z="w").get_log_prob({"x": x, "w": z})
        a = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="a")
        a2 = Normal(var=["y"], loc=torch.ones(2), scale=torch.ones(2), name="b")
        orig_a = a.get_log_prob
        a.get_log_prob = lambda x_dict, **kw: orig_a(x_dict, **kw) - 3.
        mix = MixtureModel([a, a2], Categorical(var=["k"], probs=torch.tensor([0.5, 0.5]), name="pk"))
        return mix.get_log_prob({"y": z})

    return program


@pytest.mark.parametrize("where", ["public", "logprob", "product", "expectation", "replace_var", "mixture"])
def test_a_get_log_prob_set_on_the_instance_is_what_pixyz_calls(where: str) -> None:
    ref, ours = run_both(_shifted_log_prob_program(where))
    assert_same(ref, ours)


def _params_program() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    q = Q()
    x, z = torch.randn(3, 2), torch.randn(3, 2)
    q.get_params = lambda params_dict, **kw: {"loc": torch.zeros(3, 2), "scale": torch.full((3, 2), 2.)}
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    draw = q.sample({"x": x}, batch_n=3)["z"]
    return {"lp": q.get_log_prob({"x": x, "z": z}), "kl": KullbackLeibler(q, prior).eval({"x": x}),
            "draw_shape": tuple(draw.shape), "mean": q.sample_mean({"x": x}), "var": q.sample_variance({"x": x})}


def test_get_params_set_on_the_instance_gives_the_parameters_everywhere() -> None:
    ref, ours = run_both(_params_program)
    assert_same(ref, ours)
    n = torch.distributions.Normal(torch.zeros(2), torch.full((2,), 2.))
    kl = torch.distributions.kl_divergence(n, torch.distributions.Normal(0., 1.)).sum()
    torch.testing.assert_close(ours["kl"], kl.expand(3))
    torch.testing.assert_close(ours["var"], torch.full((3, 2), 4.))


def _sample_program() -> Any:
    import torch

    from pixyz.distributions import Normal

    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    orig = p.sample

    def clamped(x_dict: Any = {}, *args: Any, **kw: Any) -> Any:  # noqa: B006
        out = orig(x_dict, *args, **kw)
        out["x"] = out["x"].clamp(-0.1, 0.1)
        return out

    p.sample = clamped
    joint = p * prior
    s = joint.sample(batch_n=200)
    own = p.sample({"z": torch.zeros(5, 2)})
    del p.sample
    after = joint.sample(batch_n=200)
    return {"joint_max": s["x"].abs().max() <= 0.1, "own_max": own["x"].abs().max() <= 0.1,
            "after_max": after["x"].abs().max() > 0.1, "keys": sorted(s)}


def test_a_sample_set_on_the_instance_draws_in_a_product_until_it_is_deleted() -> None:
    ref, ours = run_both(_sample_program)
    assert_same(ref, ours)
    assert ours["joint_max"] and ours["own_max"] and ours["after_max"]


def test_the_instance_and_class_methods_stack_as_pixyz_calls_them() -> None:
    """The class's own ``get_log_prob`` (−10) under the instance's (−1): both shifts, in a product too; deleting
    the instance's leaves the class's."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            def get_log_prob(self, x_dict: Any, *args: Any, **kw: Any) -> Any:
                return super().get_log_prob(x_dict, *args, **kw) - 10.

        c = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="c")
        other = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        orig = c.get_log_prob
        c.get_log_prob = lambda x_dict, **kw: orig(x_dict, **kw) - 1.
        v = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
        out = [c.get_log_prob(v), (c * other).get_log_prob(v)]
        del c.get_log_prob
        return out + [c.get_log_prob(v), (c * other).get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    base = torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum()
    torch.testing.assert_close(ours[0], (base - 11.).reshape(1))
    torch.testing.assert_close(ours[2], (base - 10.).reshape(1))


def _instance_shift(shift: float) -> Any:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    orig = p.get_log_prob

    def glp(x_dict: Any, **kw: Any) -> Any:
        return orig(x_dict, **kw) - shift

    p.get_log_prob = glp
    return p


def test_a_pyro_site_of_a_get_log_prob_set_on_the_instance_is_scored_by_it() -> None:
    """``p.model``'s site ``x`` is scored by the instance's method: the plain-Pyro twin's log-density with a
    ``pyro.factor`` of −2 per row."""
    from pyro_dgm.distributions import Normal

    p = _instance_shift(2.)
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    x = torch.randn(4, 2)
    pyro.set_rng_seed(0)
    tr = poutine.trace((p * prior).model).get_trace(x=x)
    z = tr.nodes["z"]["value"]

    def twin() -> None:
        with pyro.plate("data", 4):
            zz = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(zz, 1.).to_event(1), obs=x)
            pyro.factor("shift", torch.full((4,), -2.))

    ref = poutine.trace(poutine.condition(twin, data={"z": z})).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), ref.log_prob_sum())


def test_copies_and_pickles_keep_the_instance_method_and_a_fresh_instance_does_not() -> None:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    p.get_log_prob = _PickledShift(p)
    x = {"x": torch.zeros(1, 2)}
    base = torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum().reshape(1)
    other = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    xy = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
    for q in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        torch.testing.assert_close((q * other).get_log_prob(xy), 2 * base - 5.)
        assert q.get_log_prob.owner is q
    torch.testing.assert_close(Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2)).get_log_prob(x), base)


class _PickledShift:
    """A picklable instance method: the class's log-density of its owner minus 5."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def __call__(self, x_dict: Any, **kw: Any) -> Any:
        return type(self.owner).get_log_prob(self.owner, x_dict, **kw) - 5.


def test_a_control_without_instance_methods_keeps_the_class_hooks() -> None:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    p.note = "a plain attribute"
    assert not any(k in vars(p) for k in ("_dgm_score_with", "_dgm_draw_with", "_dgm_params"))


def _set_dist_program() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import Entropy

    o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    orig = p.get_sample
    p.get_sample = lambda reparam=False, sample_shape=torch.Size(): {
        k: v + 100. for k, v in orig(reparam, sample_shape).items()}
    q = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="q")
    orig_set = q.set_dist

    def set_dist(x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
        orig_set(x_dict, batch_n, **kw)
        q._dist = torch.distributions.Laplace(q._dist.loc, q._dist.scale)

    q.set_dist = set_dist
    v = {"x": torch.ones(1, 2), "y": torch.ones(1, 2)}
    return {"own_draw": p.sample(batch_n=2)["x"].min() > 50, "joint_draw": (p * o).sample(batch_n=2)["x"].min() > 50,
            "lp": q.get_log_prob(v), "joint_lp": (q * o).get_log_prob(v), "entropy": Entropy(q).eval()}


def test_set_dist_and_get_sample_set_on_the_instance_draw_and_score_as_pixyz() -> None:
    ref, ours = run_both(_set_dist_program)
    assert_same(ref, ours)
    laplace = torch.distributions.Laplace(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(ours["lp"], laplace.log_prob(torch.ones(2)).sum().reshape(1))
    torch.testing.assert_close(ours["entropy"], laplace.entropy().sum().reshape(1))


def test_a_class_method_set_after_the_instance_method_joins_it() -> None:
    """The instance's ``get_sample`` (+100) routed first; then a later cell sets the class's ``sample`` (×−1): a
    product draws through both, as Pixyz calls them (−100 and below)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            pass

        p = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        orig = p.get_sample
        p.get_sample = lambda reparam=False, sample_shape=torch.Size(): {
            k: v + 100. for k, v in orig(reparam, sample_shape).items()}
        before = (p * o).sample(batch_n=3)["x"]

        def sample(self: Any, *args: Any, **kw: Any) -> Any:
            return {k: -v for k, v in Normal.sample(self, *args, **kw).items()}

        C.sample = sample
        return {"before": before.min() > 50, "after": (p * o).sample(batch_n=3)["x"].max() < -50}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours["before"] and ours["after"]


def test_get_params_set_in_init_before_the_base_init_and_late_params_keys() -> None:
    """A subclass setting ``self.get_params`` before ``super().__init__``, and one whose ``params_keys`` reads an
    attribute set after it (read at the first call) with a ``get_params`` set on the instance before that call:
    both give the instance's parameters, as in Pixyz (closed form: N(1, 2²))."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        def fixed(params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
            return {"loc": torch.ones(1, 2), "scale": torch.full((1, 2), 2.)}

        class Early(Normal):
            def __init__(self) -> None:
                self.get_params = fixed
                super().__init__(var=["x"], name="e")

        class Late(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="l")
                self.keys = ["loc", "scale"]

            @property
            def params_keys(self) -> Any:
                return self.keys

        late = Late()
        late.get_params = fixed
        v = {"x": torch.zeros(1, 2)}
        return [Early().get_log_prob(v), late.get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    expected = torch.distributions.Normal(1., 2.).log_prob(torch.zeros(2)).sum().reshape(1)
    torch.testing.assert_close(ours[0], expected)
    torch.testing.assert_close(ours[1], expected)


def test_a_torch_class_set_on_the_class_after_an_instance_exists_is_read_by_it() -> None:
    """``B.distribution_torch_class = Laplace`` in a later cell: the instance built before scores (alone, in a
    product, in ``LogProb``) and gives its entropy by the Laplace, as Pixyz's next ``set_dist`` builds it."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import Entropy, LogProb

        class B(Normal):
            pass

        b = B(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="b")
        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        v = {"x": torch.ones(1, 2), "y": torch.ones(1, 2)}
        before = b.get_log_prob(v)
        B.distribution_torch_class = torch.distributions.Laplace
        return {"before": before, "after": b.get_log_prob(v), "product": (b * o).get_log_prob(v),
                "logprob": LogProb(b).eval(v), "entropy": Entropy(b).eval(),
                "new": B(var=["x"], loc=torch.zeros(2), scale=torch.ones(2)).get_log_prob(v)}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    laplace = torch.distributions.Laplace(torch.zeros(2), torch.ones(2))
    lp = laplace.log_prob(torch.ones(2)).sum().reshape(1)
    torch.testing.assert_close(ours["after"], lp)
    torch.testing.assert_close(ours["product"], lp + torch.distributions.Normal(0., 1.).log_prob(
        torch.ones(2)).sum())
    torch.testing.assert_close(ours["entropy"], laplace.entropy().sum().reshape(1))


class _Shift:
    """A picklable method for one instance: its class's log-density minus ``c``."""

    def __init__(self, owner: Any, c: float) -> None:
        self.owner, self.c = owner, c

    def __call__(self, x_dict: Any, **kw: Any) -> Any:
        return type(self.owner).get_log_prob(self.owner, x_dict, **kw) - self.c


@pytest.mark.parametrize("change", ["copy", "original", "delete_on_copy"])
def test_a_shallow_copy_has_routes_of_its_own(change: str) -> None:
    """``copy.copy`` shares the instance's functions, not its routes: a method set or deleted on one object later
    leaves the other's as it was (Pixyz's objects are independent after the copy)."""
    def program() -> Any:
        import copy

        import torch

        from pixyz.distributions import Normal

        p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        v = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
        p.get_log_prob = _Shift(p, 5.)
        c = copy.copy(p)
        if change == "copy":
            c.get_log_prob = _Shift(c, 1.)
        elif change == "original":
            p.get_log_prob = _Shift(p, 9.)
        else:
            del c.get_log_prob
        return {"p": (p * o).get_log_prob(v), "copy": (c * o).get_log_prob(v), "copy_own": c.get_log_prob(v)}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    base = 2 * torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum()
    shifts = {"copy": (5., 1.), "original": (9., 5.), "delete_on_copy": (5., 0.)}[change]
    torch.testing.assert_close(ours["p"], (base - shifts[0]).reshape(1))
    torch.testing.assert_close(ours["copy"], (base - shifts[1]).reshape(1))


@pytest.mark.parametrize("how", ["dict_pop", "object_delattr"])
def test_a_method_taken_out_of_the_instance_dict_directly_gives_the_class_method(how: str) -> None:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb

        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        v = {"x": torch.full((2, 2), 0.5), "y": torch.zeros(2, 2)}
        og = p.get_log_prob
        p.get_log_prob = lambda x_dict, **kw: og(x_dict, **kw) - 1
        if how == "dict_pop":
            p.__dict__.pop("get_log_prob")
        else:
            object.__delattr__(p, "get_log_prob")
        return {"own": p.get_log_prob(v), "joint": (p * o).get_log_prob(v), "LogProb": LogProb(p).eval(v),
                "draw": tuple((p * o).sample(batch_n=2)["x"].shape)}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("what", ["get_log_prob", "sample"])
def test_a_method_set_on_a_renaming_is_not_called_by_its_products(what: str) -> None:
    """Pixyz's product of a renaming is made of the renamed distribution's factor: the renaming's own method is
    called by its own public call only."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
        r = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p").replace_var(x="u")
        v = {"u": torch.full((2, 2), 0.5), "y": torch.zeros(2, 2)}
        if what == "get_log_prob":
            orr = r.get_log_prob
            r.get_log_prob = lambda x_dict, **kw: orr(x_dict, **kw) - 1
            return {"own": r.get_log_prob(v), "product": (r * o).get_log_prob(v), "other": (o * r).get_log_prob(v)}
        ors = r.sample
        r.sample = lambda x_dict={}, *a, **kw: {k: t * 0 + 5. for k, t in ors(x_dict, *a, **kw).items()}  # noqa: B006
        return {"own": r.sample(batch_n=2)["u"].eq(5.).all(), "product": (r * o).sample(batch_n=2)["u"].eq(5.).all()}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("patch", ["get_params", "set_dist"])
@pytest.mark.parametrize("instance", [False, True])
def test_the_analytic_kl_calls_a_class_method_set_after_the_instance_was_built(patch: str, instance: bool) -> None:
    """``Q.get_params`` (loc + 3) or ``Q.set_dist`` (loc + 100) set by a later cell, the KL evaluated next (with a
    method set on the instance before, or not): Pixyz's KL calls ``set_dist`` of the moment; the closed forms
    give 2·3²/2 = 9 and 2·100²/2 = 10000."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        class Q(Normal):
            pass

        q = Q(var=["x"], cond_var=["y"], loc="y", scale=1., name="q")
        pz = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
        y = torch.zeros(3, 2)
        if instance:
            og = q.get_log_prob
            q.get_log_prob = lambda x_dict, **kw: og(x_dict, **kw) - 1
        if patch == "get_params":
            Q.get_params = lambda self, params_dict={}, **kw: {  # noqa: B006
                "loc": params_dict["y"] + 3., "scale": torch.ones_like(params_dict["y"])}
        else:
            def set_dist(self: Any, x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
                Normal.set_dist(self, x_dict, batch_n, **kw)
                self._dist = torch.distributions.Normal(self._dist.loc + 100., self._dist.scale)

            Q.set_dist = set_dist
        return KullbackLeibler(q, pz).eval({"y": y})

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours, torch.full((3,), 9. if patch == "get_params" else 10000.))


def test_a_method_set_to_none_fails_in_a_product_as_in_pixyz() -> None:
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    p.get_log_prob = None
    with pytest.raises(TypeError, match="'NoneType' object is not callable"):
        (p * o).get_log_prob({"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)})


def test_a_method_reassigned_in_one_thread_while_another_scores_a_product() -> None:
    """A writer thread sets one of two equal methods (−1) over and over while a reader scores a product built
    before: the routes change in one update of the instance's state, so every read is the shifted density (as
    under Pixyz); not a race that only sometimes shows, as every read must be right whatever the interleaving."""
    import threading
    import time

    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    o = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="o")
    v = {"x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}
    expected = 2 * float(torch.distributions.Normal(0., 1.).log_prob(torch.zeros(2)).sum()) - 1.
    og = p.get_log_prob
    fns = [lambda x_dict, **kw: og(x_dict, **kw) - 1., lambda x_dict, **kw: og(x_dict, **kw) - 1.]
    p.get_log_prob = fns[0]
    joint = p * o
    stop = threading.Event()
    wrong: list[Any] = []
    reads = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                p.get_log_prob = fns[i % 2]
            except Exception as e:  # noqa: BLE001  (the other thread's records change the state it routes)
                wrong.append(repr(e))
            i += 1

    def reader() -> None:
        while not stop.is_set():
            try:
                r = float(joint.get_log_prob(v))
            except Exception as e:  # noqa: BLE001  (an error is a wrong read too)
                wrong.append(repr(e))
                continue
            reads[0] += 1
            if abs(r - expected) > 1e-5:
                wrong.append(r)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(1.)
    stop.set()
    for t in threads:
        t.join()
    assert reads[0] > 0 and wrong == []


# ---------------------------------------------------------------------- printed formulas (probe p175)
@pytest.mark.parametrize("var,cond", [("zeta", "x_1"), ("t1", "x_0"), ("z", "h_{t}"), ("z", "beta")])
def test_an_elementwise_product_of_normals_typesets_its_variables(var: str, cond: str) -> None:
    """Its own formula (documented: Pixyz prints another) typesets the names as every other formula does (sympy's
    LaTeX, Pixyz's ``convert_latex_name``), and an element of a subscripted input is ``{x_{1}}_{i}``, not the
    double subscript ``x_1_{i}``, which LaTeX refuses."""
    from pixyz.utils import convert_latex_name

    from pyro_dgm.distributions import ElementWiseProductOfNormal, Normal

    expert = Normal(loc=cond, scale=torch.tensor(1.), var=[var], cond_var=[cond], name="q")
    text = ElementWiseProductOfNormal(expert, name="r").prob_factorized_text
    v, c = convert_latex_name(var), convert_latex_name(cond)
    element = f"{{{c}}}_{{i}}" if "_" in c else f"{c}_{{i}}"
    assert text == f"p({v})\\prod_{{i}}q({v}|{element})"


def test_a_mixture_of_conditional_components_prints_its_condition_on_both_sides() -> None:
    """A mixture of components conditioned on ``y`` (pyro_dgm's; Pixyz's components have none) and its posterior:
    the right sides are conditioned on ``y`` too (``p(z,x)/p(x)`` was printed for ``p(z|x,y)``); a mixture of
    unconditioned components prints Pixyz's text (control, against Pixyz)."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc="y", scale=torch.tensor(s), var=["x"], cond_var=["y"], name=f"p_{{{k}}}")
             for k, s in enumerate((1., 2.))]
    m = MixtureModel(comps, Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="\\pi"))
    assert m.prob_joint_factorized_and_text == "p(x|y) = p_{0}(x|z=0,y)\\pi(z=0) + p_{1}(x|z=1,y)\\pi(z=1)"
    assert m.posterior().prob_joint_factorized_and_text == "p(z|x,y) = \\frac{p(z,x|y)}{p(x|y)}"

    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal

        comps = [Normal(loc=torch.zeros(1) + k, scale=torch.ones(1), var=["x"], name=f"p_{{{k}}}") for k in (0, 1)]
        m = MixtureModel(comps, Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="\\pi"))
        return [m.prob_joint_factorized_and_text, m.posterior().prob_joint_factorized_and_text]

    ref, ours = run_both(program)
    assert ref == ours
