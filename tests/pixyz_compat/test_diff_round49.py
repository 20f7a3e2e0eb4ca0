"""Forty-ninth round: Pixyz's public building blocks used directly (probe p322) and the session's other findings,
under Pixyz and here (:mod:`pixyz_harness`)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm, same


@pytest.mark.parametrize("renaming", [{"zz": "y"}, {"z": "y", "q": "w"}])
def test_a_renaming_built_directly_refuses_a_variable_the_distribution_lacks(renaming: dict) -> None:
    """Probe p322: ``ReplaceVarDistribution(p, {...})`` built directly (Pixyz's public class) skipped the checks that
    ``p.replace_var`` makes: an unknown name was ignored (``p(x|z)`` renamed ``{"zz": "y"}`` was built, and failed
    only when scored; with ``{"z": "y", "q": "w"}`` it scored as if ``q`` were not there). Pixyz raises
    ``ValueError`` when it is built; so does ours, naming the variable and the distribution."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.distributions.distributions import ReplaceVarDistribution

        p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p", features_shape=[2])
        return ReplaceVarDistribution(p, renaming)

    assert raises_same(program) == (ValueError, ValueError)
    with pytest.raises(ValueError, match=r"p\(x\|z\).*no variable '(zz|q)'; its variables are \['x', 'z'\]"):
        run_pyro_dgm(program)


def test_a_renaming_built_directly_scores_as_replace_var_does() -> None:
    """The valid renaming built directly is the one ``replace_var`` builds (the check does not refuse it)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.distributions.distributions import ReplaceVarDistribution

        p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p", features_shape=[2])
        r = ReplaceVarDistribution(p, {"z": "y"})
        values = {"x": torch.tensor([[0.5, -1.]]), "y": torch.tensor([[1., 0.]])}
        return r.prob_text, r.get_log_prob(values), p.replace_var(z="y").get_log_prob(values)

    ref, ours = run_both(program)
    assert ref[0] == ours[0] == "p(x|y)"
    closed = torch.distributions.Normal(torch.tensor([[1., 0.]]), 1.).log_prob(torch.tensor([[0.5, -1.]])).sum(-1)
    for got in (*ref[1:], *ours[1:]):
        torch.testing.assert_close(got, closed)


def test_a_flow_batch_norm_given_three_dims_normalizes_each_feature_over_the_others() -> None:
    """Probe p322 (a documented difference, ``docs/porting.md``): Pixyz's ``BatchNorm1d`` given ``(L, N, D)`` in
    training mode takes statistics over dim 0 alone, so its log-det has shape ``(N,)`` and its running mean becomes
    ``(N, D)`` (a buffer that changes shape); ours takes them per feature over every other dim, as torch's batch
    norm does, with one log-det that every value shares."""
    def program() -> Any:
        import torch

        from pixyz.flows import BatchNorm1d

        f = BatchNorm1d(4, momentum=0.5)
        x = torch.randn(3, 5, 4)
        z = f(x, compute_jacobian=True)
        return x, z, f.logdet_jacobian, f.running_mean

    ref, ours = run_both(program)
    assert ref[3].shape == (5, 4) and ref[2].shape == (5,)  # Pixyz's buffer changed shape
    x, z, logdet, running_mean = ours
    mean = x.mean(dim=(0, 1))
    var = x.var(dim=(0, 1), unbiased=False) + 1e-12  # (pyro_dgm's epsilon(), 1e-12 by default, as Pixyz's)
    torch.testing.assert_close(z, (x - mean) / var.sqrt())  # log_gamma = beta = 0 at construction
    torch.testing.assert_close(logdet, -0.5 * var.log().sum())
    torch.testing.assert_close(running_mean, 0.5 * mean)  # momentum 0.5 from zeros
    assert running_mean.shape == (4,)


def test_a_constant_refused_under_validation_scores_once_validation_is_off() -> None:
    """Probe p324: ``Normal(scale=-1.)`` built under validation (torch's default) kept the error its constant met when
    built, and raised it at every call, after ``set_default_validate_args(False)`` too, where Pixyz (and a
    distribution built with validation off) gives NaN. The constant is checked at each call under the validation of
    its moment: refused while validation is on, NaN once it is off (the Normal's log-density at a negative scale is
    ``log`` of a negative number), and refused again when it is back on."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        bad = Normal(loc=torch.tensor(0.), scale=torch.tensor(-1.), var=["x"], features_shape=[2], name="p")
        x = torch.randn(3, 2)
        out = []
        for on in (True, False, True):
            torch.distributions.Distribution.set_default_validate_args(on)
            try:
                out.append(bad.get_log_prob({"x": x}))
            except ValueError:
                out.append("refused")
            finally:
                torch.distributions.Distribution.set_default_validate_args(True)
        return out

    ref, ours = run_both(program)
    assert ref[0] == ours[0] == ref[2] == ours[2] == "refused"
    assert torch.isnan(ref[1]).all() and torch.isnan(ours[1]).all() and ours[1].shape == ref[1].shape == (3,)


def test_the_renaming_class_built_directly_renames_joints_and_posteriors_as_pixyz() -> None:
    """Probe p325: ``ReplaceVarDistribution(p * py, {"y": "w"})`` was refused here (``TypeError``: "not a single
    distribution"), where Pixyz's class renames the joint; and built on a mixture's posterior it scored a row of
    neither the posterior's ``(K, N)`` table nor the renamed density ([-1.448, -1.448] where Pixyz gives the table).
    Built directly, the class gives what ``replace_var`` gives, as Pixyz's."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal
        from pixyz.distributions.distributions import ReplaceVarDistribution

        p = Normal(loc="y", scale=torch.tensor(1.), var=["x"], cond_var=["y"], name="p", features_shape=[1])
        py = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["y"], name="py", features_shape=[1])
        joint = ReplaceVarDistribution(p * py, {"y": "w"})
        comps = [Normal(loc=torch.tensor([float(k)]), scale=torch.tensor([1.]), var=["x"], name=f"c{k}",
                        features_shape=[1]) for k in range(2)]
        post = MixtureModel(comps, Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="pz")).posterior()
        u = torch.tensor([[0.], [1.]])
        return (joint.get_log_prob({"x": torch.tensor([[0.5], [1.]]), "w": torch.tensor([[0.], [1.]])}),
                ReplaceVarDistribution(post, {"x": "u"}).get_log_prob({"u": u}),
                post.replace_var(x="u").get_log_prob({"u": u}))

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours[1], ours[2])  # the posterior's table, (K, N)
    assert ours[1].shape == (2, 2)


def test_a_renaming_that_is_no_dict_is_refused_naming_the_distribution() -> None:
    """Probe p325: ``ReplaceVarDistribution(p, ["x"])`` raised a bare ``AttributeError: 'list' object has no
    attribute 'items'``; Pixyz raises ``TypeError``, and so does ours, naming the distribution."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.distributions.distributions import ReplaceVarDistribution

        p = Normal(loc="y", scale=torch.tensor(1.), var=["x"], cond_var=["y"], name="p")
        return ReplaceVarDistribution(p, ["x"])

    assert raises_same(program) == (TypeError, TypeError)
    with pytest.raises(TypeError, match=r"Normal p\(x\|y\).*must be a dict"):
        run_pyro_dgm(program)


def test_a_flows_draw_in_a_pyro_handler_keeps_its_gradient_to_the_flow_as_under_pixyz() -> None:
    """Probe p329: Pixyz's flow distribution draws its prior and applies the flow with autograd on, so the draw
    carries a gradient to the flow's parameters; here it did, but not inside a Pyro handler (``poutine.trace``),
    where the whole site was drawn without a graph. The flow keeps its pathwise gradient there too (its base is
    drawn without one): Pixyz's gradients, with and without the trace."""
    def program() -> Any:
        import torch
        from pyro import poutine

        from pixyz.distributions import Normal, TransformedDistribution
        from pixyz.flows import PlanarFlow

        flow = PlanarFlow(3)
        p = TransformedDistribution(prior=Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"],
                                                 features_shape=[3]), flow=flow, var=["x"])
        out = []
        for traced in (False, True):
            torch.manual_seed(1)
            draw = (poutine.trace(lambda: p.sample(batch_n=2)).get_trace().nodes["_RETURN"]["value"] if traced else
                    p.sample(batch_n=2))
            grads = torch.autograd.grad(draw["x"].pow(2).sum(), list(flow.parameters()))
            out.append((draw["x"], grads))
        return out

    ref, ours = run_both(program)
    assert_same(ref[0], ours[0])  # (Pixyz ignores handlers: its traced run is its plain one)
    assert_same(ours[0], ours[1])


def test_a_users_renaming_class_renames_a_joint_as_pixyzs_does() -> None:
    """Probe p329: a user's subclass of ``ReplaceVarDistribution`` given a joint was refused (``TypeError``: not a
    single distribution) where Pixyz renames the joint: the same variables and log-densities now (the result is the
    renamed joint, which is no instance of the subclass, a documented difference)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ReplaceVarDistribution

        class MyRenaming(ReplaceVarDistribution):
            pass

        p = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="p")
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
        r = MyRenaming(p * prior, {"x": "y"})
        return r.var, r.get_log_prob({"y": torch.randn(3, 2), "z": torch.randn(3, 2)})

    same(program)


def test_a_mixtures_options_that_leave_log_p_whole_give_no_warning_as_under_pixyz() -> None:
    """Probe p330: ``MixtureModel.get_log_prob`` warned "sum_features=False and feature_dims are ignored" whenever
    either was given, also where they ask for log p(x) itself (``feature_dims`` naming every feature dim, or
    ``sum_features=False`` of a scalar variable): a valid Pixyz program, silent under Pixyz, failed under warnings
    as errors. Same values, no warning; a real drop of the options (two features, ``sum_features=False``) still
    warns, pointing at the caller's line."""
    def program() -> Any:
        import warnings

        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal

        def mixture(d: int) -> Any:  # (d = 0: a scalar variable, constants of shape ())
            comps = [Normal(loc=torch.full((d,), float(k)) if d else torch.tensor(float(k)),
                            scale=torch.ones(d) if d else torch.tensor(1.), var=["x"], name=f"c{k}")
                     for k in range(2)]
            return MixtureModel(comps, Categorical(probs=torch.tensor([.3, .7]), var=["z"], name="pz"))

        out = []
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            scalar, two = mixture(0), mixture(2)
            x1, x2 = torch.tensor([0.5, 2., -1.]), torch.tensor([[0.5, 1.], [2., 0.], [-1., 1.]])
            out.append(scalar.get_log_prob({"x": x1}, sum_features=False))
            out.append(two.get_log_prob({"x": x2}, feature_dims=[-1]))
            out.append(two.get_log_prob({"x": x2}, sum_features=True, feature_dims=[1]))
            quiet = len([w for w in seen if "factorize" in str(w.message)])
            out.append(two.get_log_prob({"x": x2}, sum_features=False))
        loud = [w for w in seen if "factorize" in str(w.message)]
        return out, quiet, len(loud) > 0, [w.filename for w in loud]

    ref, ours = run_both(program)
    assert_same(ref[0], ours[0])
    assert ref[1] == ours[1] == 0
    assert ours[2] and all(f == __file__ for f in ours[3])  # (Pixyz says nothing there; ours names the caller)


def test_warnings_about_a_programs_own_lines_point_at_those_lines() -> None:
    """Probe p330: the warnings for ``cond_var="zh"`` given to a family (Pixyz reads one variable per character) and
    for an ``update_value`` whose variable no step draws pointed into pyro_dgm's source (``exponential.py``,
    ``iteration.py``), not at the user's line: they point at the line of this file that made the object or
    evaluated the loss."""
    import warnings

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, KullbackLeibler

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Normal(loc="y", scale=torch.tensor(1.), var=["x"], cond_var="yw", name="p")
        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
        p = Normal(loc="z_prev", scale=torch.tensor(1.), var=["z"], cond_var=["z_prev"], name="p")
        loss = IterativeLoss(KullbackLeibler(q, p), max_iter=2, series_var=["x"], update_value={"z": "z_prev"})
        loss.eval({"x": torch.zeros(2, 3, 1), "z_prev": torch.zeros(3, 1)})
    said = {("string" if "is a string" in str(w.message) else "update"): w.filename for w in seen
            if "is a string" in str(w.message) or "update_value" in str(w.message)}
    assert said == {"string": __file__, "update": __file__}


@pytest.mark.parametrize("given", ["nothing", "None"])
def test_a_renaming_of_a_joint_without_its_renaming_is_refused(given: str) -> None:
    """Probe p333: ``ReplaceVarDistribution(joint)`` (or with ``None``) gave the joint back unrenamed, where Pixyz
    raises ``TypeError`` (a missing argument; ``None`` is not iterable): so does ours."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ReplaceVarDistribution

        p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="pz")
        return ReplaceVarDistribution(p * prior) if given == "nothing" else ReplaceVarDistribution(p * prior, None)

    assert raises_same(program) == (TypeError, TypeError)


def test_renaming_subclasses_with_their_own_arguments_are_built_by_their_init() -> None:
    """Probe p334: ``ReplaceVarDistribution.__new__`` took Pixyz's two arguments only, so a user's subclass whose
    ``__init__`` takes other ones (``Fixed(p)`` fixing the renaming, ``Extra(p, d, note=2.)``, ``Named(dist=p,
    mapping=d)``) was refused with a ``TypeError`` about ``__new__``; Pixyz builds them all. They are built by their
    own ``__init__``: Pixyz's variables and log-densities."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ReplaceVarDistribution

        class Fixed(ReplaceVarDistribution):
            def __init__(self, p: Any) -> None:
                super().__init__(p, {"x": "y"})

        class Extra(ReplaceVarDistribution):
            def __init__(self, p: Any, replace_dict: Any, note: float = 1.) -> None:
                super().__init__(p, replace_dict)
                self.note = note

        class Named(ReplaceVarDistribution):
            def __init__(self, dist: Any, mapping: Any) -> None:
                super().__init__(dist, mapping)

        p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
        values = {"y": torch.tensor([[0.5]]), "z": torch.tensor([[1.]])}
        made = [Fixed(p), Extra(p, {"x": "y"}, 2.), Extra(p, {"x": "y"}, note=2.), Named(dist=p, mapping={"x": "y"})]
        return [(type(r).__name__, list(r.var), r.get_log_prob(values)) for r in made]

    same(program)


def test_the_renaming_class_calls_no_users_replace_var_and_names_a_bad_key() -> None:
    """Probe p335: ``ReplaceVarDistribution(p, d)`` called a user's own ``replace_var`` override on ``p`` and returned
    whatever it gave (an unrelated distribution), where Pixyz's class calls none; and a key that is no name (``1``)
    on a mixture's posterior raised Python's bare ``TypeError: keywords must be strings`` where Pixyz raises
    ``ValueError``. The override is not called; the key is refused by name, as Pixyz's class refuses it."""
    def program(case: str) -> Any:
        def run() -> Any:
            import torch

            from pixyz.distributions import Categorical, MixtureModel, Normal, ReplaceVarDistribution

            class Mine(Normal):
                def replace_var(self, **kw: Any) -> Any:
                    return Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["other"])

            if case == "override":
                p = Mine(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
                r = ReplaceVarDistribution(p, {"x": "y"})
                return type(r).__name__, list(r.var), list(r.cond_var)
            comps = [Normal(loc=torch.tensor([float(k)]), scale=torch.tensor([1.]), var=["x"], name=f"c{k}")
                     for k in range(2)]
            post = MixtureModel(comps, Categorical(probs=torch.tensor([.5, .5]), var=["z"], name="pz")).posterior()
            return ReplaceVarDistribution(post, {1: "y"})
        return run

    same(program("override"))
    assert raises_same(program("key")) == (ValueError, ValueError)
