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


def _encoder(normal: Any) -> Any:
    """q(z|x), a linear encoder, as a subclass of ``normal`` (Pixyz's Normal or ours, as the harness imports it)."""
    class Q(normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    return Q()


def _shifted_log_prob_program(where: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import MixtureModel, Categorical, Normal
        from pixyz.losses import Expectation, LogProb

        q = _encoder(Normal)
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

    q = _encoder(Normal)
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


# ---------------------------------------------------------------------- the attack on the class-level changes (p176)
def test_a_torch_class_taken_back_from_the_class_gives_the_family_again() -> None:
    """``B.distribution_torch_class = Laplace`` then ``del B.distribution_torch_class`` (recursed: the instance
    read its own torch class); also a class that named torch's ``Normal`` in its body: Pixyz's Normal again."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class B(Normal):
            pass

        class B2(Normal):
            distribution_torch_class = torch.distributions.Normal

        v = {"x": torch.full((1, 2), 0.3)}
        out = []
        for cls in (B, B2):
            b = cls(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="b")
            out.append(b.get_log_prob(v))
            cls.distribution_torch_class = torch.distributions.Laplace
            out.append(b.get_log_prob(v))
            del cls.distribution_torch_class
            out.append(b.get_log_prob(v))
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    normal = torch.distributions.Normal(0., 1.).log_prob(torch.full((2,), 0.3)).sum().reshape(1)
    laplace = torch.distributions.Laplace(0., 1.).log_prob(torch.full((2,), 0.3)).sum().reshape(1)
    for got, want in zip(ours, [normal, laplace, normal] * 2):
        torch.testing.assert_close(got, want)


def test_the_entropy_variance_and_dist_read_a_torch_class_set_on_the_class_first() -> None:
    """Right after the later cell (no draw or score in between): Pixyz's Laplace entropy, variance and object."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import Entropy

        class B(Normal):
            pass

        b = B(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="b")
        b.get_log_prob({"x": torch.zeros(1, 2)})
        B.distribution_torch_class = torch.distributions.Laplace
        out = {"entropy": Entropy(b).eval(), "get_entropy": b.get_entropy(), "variance": b.sample_variance()}
        b.set_dist()
        return {**out, "dist": type(b.dist).__name__.endswith("Laplace")}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    laplace = torch.distributions.Laplace(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(ours["get_entropy"], laplace.entropy().sum().reshape(1))
    torch.testing.assert_close(ours["variance"], laplace.variance.reshape(1, 2))


@pytest.mark.parametrize("what", ["get_params", "set_dist", "distribution_torch_class"])
@pytest.mark.parametrize("used", [False, True])
def test_a_pyro_site_reads_a_class_change_made_after_the_instance(what: str, used: bool) -> None:
    """``q.model``'s site right after a later cell's ``Q.get_params`` (loc 2), ``Q.set_dist`` (loc + 2) or
    ``Q.distribution_torch_class = Laplace``: the closed form of the new distribution (the site kept the old one
    until a public call)."""
    from pyro_dgm.distributions import Normal

    def get_params(self: Any, params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
        return {"loc": torch.full((1, 2), 2.), "scale": torch.ones(1, 2)}

    def set_dist(self: Any, x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
        Normal.set_dist(self, x_dict, batch_n, **kw)
        self._dist = torch.distributions.Normal(self._dist.loc + 2., self._dist.scale)

    class Q(Normal):
        pass

    x = torch.full((3, 2), 0.3)
    q = Q(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="q")
    if used:
        poutine.trace(q.model).get_trace(x=x)
    setattr(Q, what, {"get_params": get_params, "set_dist": set_dist,
                      "distribution_torch_class": torch.distributions.Laplace}[what])
    ref = (torch.distributions.Laplace(0., 1.) if what == "distribution_torch_class"
           else torch.distributions.Normal(2., 1.)).log_prob(x).sum()
    torch.testing.assert_close(poutine.trace(q.model).get_trace(x=x).log_prob_sum(), ref)


def test_a_mixture_posterior_in_a_product_prints_pixyzs_factor() -> None:
    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal

        comps = [Normal(loc=torch.zeros(1) + k, scale=torch.ones(1), var=["x"], name=f"p_{k}") for k in range(2)]
        post = MixtureModel(comps, Categorical(probs=torch.tensor([.3, .7]), var=["z"], name="pi")).posterior()
        q = Normal(var=["y"], loc=torch.zeros(1), scale=torch.ones(1), name="q")
        return [post.prob_joint_factorized_and_text, (post * q).prob_joint_factorized_and_text,
                (q * post).prob_joint_factorized_and_text]

    ref, ours = run_both(program)
    assert ref == ours


def test_a_mixture_prints_each_components_own_condition() -> None:
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc="a", scale=torch.tensor(1.), var=["x"], cond_var=["a"], name="p_{0}"),
             Normal(loc="b", scale=torch.tensor(1.), var=["x"], cond_var=["b"], name="p_{1}")]
    m = MixtureModel(comps, Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="\\pi"))
    assert m.prob_factorized_text == "p_{0}(x|z=0,a)\\pi(z=0) + p_{1}(x|z=1,b)\\pi(z=1)"
    prior = Categorical(probs="c", var=["z"], cond_var=["c"], name="\\pi")
    plain = [Normal(loc=torch.zeros(1) + k, scale=torch.ones(1), var=["x"], name=f"p_{{{k}}}") for k in (0, 1)]
    assert MixtureModel(plain, prior).prob_factorized_text == "p_{0}(x|z=0)\\pi(z=0|c) + p_{1}(x|z=1)\\pi(z=1|c)"


@pytest.mark.parametrize("shape", [(1,), (1, 1), (1, 3)])
def test_a_mixture_posterior_refuses_a_component_value_of_the_wrong_shape(shape: tuple) -> None:
    """2 components: a one-hot value of another size was broadcast over both (the sum of both log-posteriors;
    Pixyz returns a table); refused as the Categorical refuses it, naming the variable and the shapes."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    prior = Categorical(probs=torch.tensor([.3, .7]), var=["k"], name="c")
    comps = [Normal(loc=torch.zeros(1) + k, scale=torch.ones(1), var=["x"], name=f"p_{k}") for k in range(2)]
    post = MixtureModel(comps, prior).posterior()
    with pytest.raises(ValueError, match=r"'k' has shape \(1,( [13])?\).*2 components"):
        post.get_log_prob({"x": torch.tensor([[3.]]), "k": torch.ones(shape)})
    good = post.get_log_prob({"x": torch.tensor([[3.]]), "k": torch.tensor([[0., 1.]])})
    w = torch.tensor([.3, .7]) * torch.distributions.Normal(torch.tensor([0., 1.]), 1.).log_prob(torch.tensor(3.)).exp()
    torch.testing.assert_close(good, (w / w.sum()).log()[1:])


# ---------------------------------------------------------------------- generated programs (p177)
def test_a_set_dist_set_on_a_class_with_its_own_get_sample_scores() -> None:
    """``C.set_dist`` (loc + 10) from a later cell on a class with its own ``get_sample``: the density and the mean
    follow it, as the draws did (the scores kept the family's)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            def get_sample(self, reparam: bool = False, sample_shape: Any = torch.Size()) -> Any:
                return super().get_sample(reparam, sample_shape)

        def set_dist(self: Any, x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
            Normal.set_dist(self, x_dict, batch_n, **kw)
            self._dist = torch.distributions.Normal(self._dist.loc + 10., self._dist.scale)

        before = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        C.set_dist = set_dist
        after = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        v = {"x": torch.zeros(1, 2)}
        return [before.get_log_prob(v), before.sample_mean(), after.get_log_prob(v), after.sample_mean()]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours[0], torch.distributions.Normal(10., 1.).log_prob(torch.zeros(2)).sum().reshape(1))


@pytest.mark.parametrize("where", ["instance", "class"])
def test_a_mixture_scores_and_draws_by_its_priors_own_methods(where: str) -> None:
    """A prior whose own ``get_log_prob`` subtracts 1 and whose ``sample`` always picks component 1: Pixyz's
    mixture density :math:`\\log \\sum_k \\pi_k e^{-1} p_k(y)` (the shift is not normalized away) and draws."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal

        def always_one(x_dict: Any = {}, *a: Any, **kw: Any) -> Any:  # noqa: B006
            return {"k": torch.tensor([[0., 1.]]).expand(kw.get("batch_n") or 1, 2)}

        if where == "class":
            class Pk(Categorical):
                def get_log_prob(self, x_dict: Any, *a: Any, **kw: Any) -> Any:
                    return super().get_log_prob(x_dict, *a, **kw) - 1.

                def sample(self, x_dict: Any = {}, *a: Any, **kw: Any) -> Any:  # noqa: B006
                    return always_one(x_dict, *a, **kw)

            pk = Pk(var=["k"], probs=torch.tensor([0.4, 0.6]), name="pk")
        else:
            pk = Categorical(var=["k"], probs=torch.tensor([0.4, 0.6]), name="pk")
            og = pk.get_log_prob
            pk.get_log_prob = lambda x_dict, *a, **kw: og(x_dict, *a, **kw) - 1.
            pk.sample = always_one
        c0 = Normal(var=["y"], loc=torch.zeros(2), scale=torch.ones(2), name="c0")
        c1 = Normal(var=["y"], loc=torch.full((2,), 10.), scale=torch.ones(2), name="c1")
        m = MixtureModel([c0, c1], pk)
        return {"log_prob": m.get_log_prob({"y": torch.ones(1, 2)}),
                "from_c1": bool((m.sample(batch_n=4)["y"] > 5).all())}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    n = torch.distributions.Normal
    lps = torch.stack([n(0., 1.).log_prob(torch.ones(2)).sum() + torch.tensor(0.4).log(),
                       n(10., 1.).log_prob(torch.ones(2)).sum() + torch.tensor(0.6).log()]) - 1.
    torch.testing.assert_close(ours["log_prob"], lps.logsumexp(0).reshape(1))
    assert ours["from_c1"]


@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("call", ["get_log_prob", "sample", "product"])
def test_a_get_params_without_a_parameter_is_named(where: str, call: str) -> None:
    """Pixyz's ``set_dist`` raises a ValueError saying the class requires ``loc`` and ``scale``; here too (a bare
    ``KeyError: 'scale'`` or torch's ``Normal.__init__`` error before), naming the distribution and the key."""
    from pyro_dgm.distributions import Normal

    def loc_only(params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
        return {"loc": torch.zeros(1, 2)}

    if where == "class":
        class C(Normal):
            def get_params(self, params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
                return loc_only(params_dict, **kw)

        p = C(var=["x"], cond_var=["z"], loc="z", scale=1., name="px")
    else:
        p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="px")
        p.get_params = loc_only
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    v = {"x": torch.zeros(1, 2), "z": torch.zeros(1, 2)}
    with pytest.raises(ValueError, match=r"px\(x\|z\): get_params\(\) returned \['loc'\], without 'scale'"):
        if call == "get_log_prob":
            p.get_log_prob(v)
        elif call == "sample":
            p.sample({"z": torch.zeros(1, 2)})
        else:
            (p * prior).get_log_prob(v)


# ---------------------------------------------------------------------- errors from user code (p171's leftovers)
def _poe_with_a_bad_scale(normal: Any, product: Any, scale: Any) -> Any:
    """``product`` of experts ``E q_{1}(z|x)`` and ``E q_{2}(z|y)`` (subclasses of ``normal``, Pixyz's or ours),
    the second's scale ``scale(h)`` of its input ``h``."""
    class E(normal):
        def __init__(self, name: str, cv: str, bad: bool) -> None:
            super().__init__(var=["z"], cond_var=[cv], name=name)
            self.cv, self.bad = cv, bad

        def forward(self, **kw: Any) -> Any:
            h = kw[self.cv]
            return {"loc": h, "scale": scale(h) if self.bad else torch.ones_like(h)}

    return product([E("q1", "x", False), E("q2", "y", True)], name="q")


def _numpy_program(where: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import Deterministic, Normal, ProductOfNormal, TransformedDistribution
        from pixyz.flows import Flow

        x, y = torch.randn(3, 2), torch.randn(3, 2)
        if where == "expert":
            poe = _poe_with_a_bad_scale(Normal, ProductOfNormal, lambda h: torch.ones_like(h).numpy())
            return poe.sample({"x": x, "y": y})
        if where == "flow":
            class NpFlow(Flow):
                def __init__(self) -> None:
                    super().__init__(2)

                def forward(self, x: Any, y: Any = None, compute_jacobian: bool = True) -> Any:
                    if compute_jacobian:
                        self._logdet_jacobian = torch.zeros(x.shape[0])
                    return (x + 1).numpy()

            prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2))
            return TransformedDistribution(prior, NpFlow(), var=["x"]).sample(batch_n=3)

        class Det(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")

            def forward(self, x: Any) -> Any:
                return {"h": (x + 1).numpy()}

        p = Normal(var=["y"], cond_var=["h"], loc="h", scale=torch.tensor(1.), features_shape=[2], name="p")
        return (p * Det()).sample({"x": x})

    return program


@pytest.mark.parametrize("where,named", [
    ("expert", r"ProductOfNormal q\(z\|x,y\): expert 1 \(E q_\{2\}\(z\|y\)\) gave scale as numpy.ndarray"),
    ("flow", r"NpFlow: its forward\(\) returned numpy.ndarray; a flow must return a tensor"),
    ("deterministic", r"Normal p\(y\|h\): parameter loc is a numpy array .*the value of 'h' given as loc must be a "
                      r"tensor")])
def test_a_numpy_array_from_user_code_in_a_composite_is_named(where: str, named: str) -> None:
    """Pixyz fails on each (torch's errors about tensors); so does pyro_dgm, naming the distribution, the part and
    the parameter or variable (before: "unsupported operand type(s) for &", "no attribute '_version'", the whole
    array printed)."""
    from pixyz_harness import run_pyro_dgm, raises_same

    theirs, ours = raises_same(_numpy_program(where))
    assert issubclass(ours, TypeError)
    with pytest.raises(TypeError, match=named):
        run_pyro_dgm(_numpy_program(where))


@pytest.mark.needs_validation  # (without torch's check of the parameters nothing reads their values: meta draws)
def test_parameters_on_the_meta_device_are_named_as_such() -> None:
    from pyro_dgm.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.fc(x).to("meta"), "scale": torch.ones(4, 2, device="meta")}

    with pytest.raises(RuntimeError, match=r"q\(z\|x\): parameter loc is on the 'meta' device \(shape \(4, 2\)"):
        Q().sample({"x": torch.randn(4, 3)})


# ---------------------------------------------------------------------- the attack on the third batch (p178)
@pytest.mark.parametrize("between", ["sample", "get_log_prob"])
@pytest.mark.parametrize("target", ["C", "P"])
def test_a_set_dist_added_after_a_routed_sample_keeps_pyro_runs_finite(between: str, target: str) -> None:
    """A later cell's ``C.sample`` (+1000) or ``C.get_log_prob``, a call, then ``set_dist`` (loc + 10) on the class
    or its parent: a Pyro model run recursed without end. Its site is now the set_dist's Normal(10, 1) (observed)
    and its draw goes through the class's own ``sample`` (+1000)."""
    from pyro_dgm.distributions import Normal

    def sample(self: Any, x_dict: Any = {}, *a: Any, **kw: Any) -> Any:  # noqa: B006
        return {k: v + 1000. for k, v in Normal.sample(self, x_dict, *a, **kw).items()}

    def get_log_prob(self: Any, x_dict: Any, *a: Any, **kw: Any) -> Any:
        return Normal.get_log_prob(self, x_dict, *a, **kw)

    def set_dist(self: Any, x_dict: Any = {}, batch_n: Any = None, **kw: Any) -> None:  # noqa: B006
        Normal.set_dist(self, x_dict, batch_n, **kw)
        self._dist = torch.distributions.Normal(self._dist.loc + 10., self._dist.scale)

    class P(Normal):
        pass

    class C(P):
        pass

    c = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
    setattr(C, between, sample if between == "sample" else get_log_prob)
    x = torch.full((1, 2), 0.5)
    c.get_log_prob({"x": x})
    setattr({"C": C, "P": P}[target], "set_dist", set_dist)
    ref = torch.distributions.Normal(10., 1.).log_prob(x).sum()
    torch.testing.assert_close(poutine.trace(c.model).get_trace(x=x).log_prob_sum(), ref)
    drawn = poutine.trace(c.model).get_trace().nodes["x"]["value"]
    assert bool((drawn > 500).all()) == (between == "sample") and bool((drawn > 5).all())


def test_a_method_set_later_that_calls_a_moment_before_its_super_call_runs_once() -> None:
    """``C.get_log_prob`` from a later cell calls ``self.sample_mean`` (which installs the class again) before its
    ``super()`` call: the shift was counted twice on the first call (the super() call ran the user's method again)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class C(Normal):
            pass

        def get_log_prob(self: Any, x_dict: Any, *a: Any, **kw: Any) -> Any:
            m = self.sample_mean({"z": x_dict["z"]})
            return Normal.get_log_prob(self, x_dict, *a, **kw) - m.sum(-1)

        c = C(var=["x"], cond_var=["z"], loc="z", scale=torch.ones(2), name="p")
        v = {"x": torch.full((1, 2), 0.5), "z": torch.ones(1, 2)}
        c.get_log_prob(v)
        C.get_log_prob = get_log_prob
        return [c.get_log_prob(v), c.get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    closed = (torch.distributions.Normal(1., 1.).log_prob(torch.tensor(0.5)) * 2 - 2.).reshape(1)
    torch.testing.assert_close(ours[0], closed)


@pytest.mark.parametrize("case", ["later_cell", "body"])
def test_a_subclass_with_its_own_torch_class_and_params_keys_scores(case: str) -> None:
    """A ``Normal`` subclass made an ``Exponential`` with ``params_keys = ["rate"]`` and a ``get_params`` giving it,
    by a later cell (refused by the new get_params check) or in its body (refused as "unknown parameter 'loc'":
    Pixyz keeps the ``loc`` and ``scale`` it is built with as buffers, unread): Exponential(2)'s density."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        def rate(self: Any, params_dict: Any = {}, **kw: Any) -> Any:  # noqa: B006
            return {"rate": torch.full((1, 2), 2.)}

        class E(Normal):
            if case == "body":
                distribution_torch_class = torch.distributions.Exponential
                params_keys = ["rate"]
                get_params = rate

        v = {"x": torch.full((1, 2), 0.5)}
        p = E(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        if case == "later_cell":
            p.get_log_prob(v)
            E.distribution_torch_class = torch.distributions.Exponential
            E.params_keys = ["rate"]
            E.get_params = rate
        return [p.get_log_prob(v), E(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="q").get_log_prob(v)]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    expected = torch.distributions.Exponential(2.).log_prob(torch.full((2,), 0.5)).sum().reshape(1)
    torch.testing.assert_close(ours[0], expected)


@pytest.mark.parametrize("how", ["sample_shape", "model", "conditional"])
def test_every_mixture_draw_picks_components_by_the_priors_own_sample(how: str) -> None:
    """A prior whose own ``sample`` always picks component 1 (at 10): draws with ``sample_shape``, from
    ``m.model()`` and of a mixture of conditional components took the prior's probabilities (half from 0)."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    class AlwaysOne(Categorical):
        def sample(self, x_dict: Any = {}, batch_n: Any = None, sample_shape: Any = torch.Size(),  # noqa: B006
                   return_all: bool = True, **kw: Any) -> Any:
            return {"k": torch.tensor([[0., 1.]]).expand(*sample_shape, batch_n or 1, 2)}

    pk = AlwaysOne(var=["k"], probs=torch.tensor([0.5, 0.5]), name="pk")
    if how == "conditional":
        comps = [Normal(var=["y"], cond_var=["a"], loc="a", scale=torch.ones(1), name="d0"),
                 Normal(var=["y"], cond_var=["b"], loc="b", scale=torch.ones(1), name="d1")]
        y = MixtureModel(comps, pk).sample({"a": torch.zeros(1, 1), "b": torch.full((1, 1), 10.)}, batch_n=200)["y"]
    else:
        comps = [Normal(var=["y"], loc=torch.zeros(1), scale=torch.ones(1), name="c0"),
                 Normal(var=["y"], loc=torch.full((1,), 10.), scale=torch.ones(1), name="c1")]
        m = MixtureModel(comps, pk)
        y = (m.sample(sample_shape=[200])["y"] if how == "sample_shape" else
             torch.cat([poutine.trace(m.model).get_trace().nodes["y"]["value"] for _ in range(50)]))
    assert bool((y > 5).all())  # (10 − 5 is 5 standard deviations: a draw from component 0 above 5 has p < 3e-7)


def test_a_mixture_posterior_scores_index_values_and_names_wrong_ones() -> None:
    """An index-valued prior (``one_hot=False``): the posterior's own ``sample_shape`` draw fed back scores as the
    one-hot twin's does; values of shape (N, 1), out of range, or of another batch are named (torch's gather and
    broadcast errors before)."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc=torch.zeros(2) + k, scale=torch.ones(2), var=["x"], name=f"p_{k}") for k in range(3)]
    x = torch.randn(4, 2)
    posts = {h: MixtureModel(comps, Categorical(probs=torch.tensor([.2, .3, .5]), var=["z"], name="pi",
                                                one_hot=h)).posterior() for h in (True, False)}
    s = posts[False].sample({"x": x}, sample_shape=[5])
    onehot = torch.nn.functional.one_hot(s["z"].long(), 3).float()
    torch.testing.assert_close(posts[False].get_log_prob(s), posts[True].get_log_prob({"x": x, "z": onehot}))
    for z, match in ((torch.zeros(4, 1), r"shape \(4, 1\).*indices 0\.\.2 of shape \(4,\)"),
                     (torch.tensor([0, 1, 2, 5]), "holds the index 5, but there are 3 components"),
                     (torch.zeros(3), r"shape \(3,\), which does not broadcast with the batch shape \(4,\)")):
        with pytest.raises(ValueError, match=match):
            posts[False].get_log_prob({"x": x, "z": z})
    with pytest.raises(ValueError, match=r"shape \(3, 3\), which does not broadcast with the batch shape \(4,\)"):
        posts[True].get_log_prob({"x": x, "z": torch.eye(3)})


# ---------------------------------------------------------------------- the attack on the fourth batch (p179)
@pytest.mark.parametrize("how", ["batch_n", "plate", "predictive", "sample_shape"])
def test_a_mixtures_prior_with_its_own_sample_draws_under_plates_and_sample_shape(how: str) -> None:
    """Under ``pyro.plate`` and ``Predictive(parallel=True)`` such a mixture was refused (the prior expanded to the
    plate, then asked for one row); the prior is asked for one row per draw (``batch_n``), as Pixyz's mixture asks
    it. Of 400 draws from c1 with probability 0.9, between 300 and 390 (a binomial's 5-sigma band: 360 ± 30)."""
    import pyro
    from pyro.infer import Predictive

    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    class Flip(Categorical):
        def sample(self, x_dict: Any = {}, batch_n: Any = None, sample_shape: Any = torch.Size(),  # noqa: B006
                   return_all: bool = True, **kw: Any) -> Any:
            out = super().sample(x_dict, batch_n=batch_n, sample_shape=sample_shape, return_all=False, **kw)
            return {"k": out["k"].flip(-1)}

    comps = [Normal(var=["y"], loc=torch.zeros(1), scale=torch.ones(1), name="c0"),
             Normal(var=["y"], loc=torch.full((1,), 10.), scale=torch.ones(1), name="c1")]
    m = MixtureModel(comps, Flip(var=["k"], probs=torch.tensor([0.1, 0.9]).flip(0), name="pk"))
    torch.manual_seed(0)
    if how == "batch_n":
        y = m.sample(batch_n=400)["y"]
    elif how == "sample_shape":
        y = m.sample(sample_shape=[400])["y"]
    elif how == "plate":
        with pyro.plate("data", 400):
            y = poutine.trace(m.model).get_trace().nodes["y"]["value"]
    else:
        y = Predictive(m.model, num_samples=400, parallel=True)()["y"]
    assert y.numel() == 400 and 300 <= int((y > 5).sum()) <= 390


def test_a_priors_own_sample_without_sample_shape_serves_a_mixtures_sample_shape_draw() -> None:
    """A prior's ``sample(x_dict, batch_n, **kw)`` (no ``sample_shape``, which Pixyz's mixture never passes): a
    ``sample_shape`` draw was refused with a message about Pyro sites and plates."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    class One(Categorical):
        def sample(self, x_dict: Any = {}, batch_n: Any = None, return_all: bool = True, **kw: Any) -> Any:  # noqa
            return {"k": torch.tensor([[0., 1.]]).expand(batch_n or 1, 2)}

    comps = [Normal(var=["y"], loc=torch.zeros(1), scale=torch.ones(1), name="c0"),
             Normal(var=["y"], loc=torch.full((1,), 10.), scale=torch.ones(1), name="c1")]
    y = MixtureModel(comps, One(var=["k"], probs=torch.tensor([0.5, 0.5]), name="pk")).sample(
        sample_shape=[3], batch_n=2)["y"]
    assert y.shape == (3, 2, 1) and bool((y > 5).all())


@pytest.mark.parametrize("method", ["get_log_prob", "sample"])
def test_a_partialmethod_of_a_class_is_called_by_its_products(method: str) -> None:
    def program() -> Any:
        import functools

        import torch

        from pixyz.distributions import Normal

        def glp(self: Any, x_dict: Any, *a: Any, shift: float = 0., **kw: Any) -> Any:
            return Normal.get_log_prob(self, x_dict, *a, **kw) - shift

        def smp(self: Any, x_dict: Any = {}, *a: Any, shift: float = 0., **kw: Any) -> Any:  # noqa: B006
            return {k: v + shift if k == "x" else v for k, v in Normal.sample(self, x_dict, *a, **kw).items()}

        class C(Normal):
            pass

        if method == "get_log_prob":
            C.get_log_prob = functools.partialmethod(glp, shift=1.)
        else:
            C.sample = functools.partialmethod(smp, shift=100.)
        c = C(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="c")
        prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
        v = {"x": torch.full((1, 2), 0.5), "z": torch.zeros(1, 2)}
        return {"own": c.get_log_prob(v), "product": (c * prior).get_log_prob(v),
                "drawn_shifted": bool(((c * prior).sample(batch_n=2)["x"] > 50).all())}

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("value", [2.0, 2, True])
def test_a_number_from_an_expert_is_named(value: Any) -> None:
    """Pixyz stacks the experts' tensors and fails on a number; here too, naming the expert (a bare
    ``AttributeError: 'float' object has no attribute 'shape'`` before)."""
    from pyro_dgm.distributions import Normal, ProductOfNormal

    poe = _poe_with_a_bad_scale(Normal, ProductOfNormal, lambda h: value)
    with pytest.raises(TypeError, match=r"expert 1 \(E q_\{2\}\(z\|y\)\) gave scale as builtins\."):
        poe.sample({"x": torch.randn(3, 2), "y": torch.randn(3, 2)})


def test_a_nan_component_index_is_named() -> None:
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc=torch.zeros(2) + k, scale=torch.ones(2), var=["x"], name=f"p_{k}") for k in range(3)]
    post = MixtureModel(comps, Categorical(probs=torch.tensor([.2, .3, .5]), var=["z"], name="pi",
                                           one_hot=False)).posterior()
    with pytest.raises(ValueError, match="the value of 'z' holds NaN"):
        post.get_log_prob({"x": torch.randn(2, 2), "z": torch.tensor([0., float("nan")])})
