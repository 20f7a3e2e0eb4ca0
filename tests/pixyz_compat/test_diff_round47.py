"""Forty-seventh round: a marginalized ``EmpiricalDistribution`` variable (probe p289), unary operators whose
operand was set to ``None`` and ``eval(batch_n=...)`` of the sample-based divergences (probes p291, p288), under
Pixyz and here (:mod:`pixyz_harness`)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _empirical_joint() -> Any:
    """``q(x|z)`` and an ``EmpiricalDistribution`` of ``z``, with a data batch ``a`` and a third ``r(y|x)``
    (Pixyz's imports when called)."""
    import torch

    from pixyz.distributions import EmpiricalDistribution, Normal

    a = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    q = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="q")
    r = Normal(loc="x", scale=torch.ones(2), var=["y"], cond_var=["x"], name="r")
    return q, EmpiricalDistribution(var=["z"]), r, a


def _draws(m: Any, values: dict[str, Any]) -> list[Any]:
    """The keys (in order) and values of ``m``'s mean draw with and without ``return_all``."""
    out = []
    for return_all in (True, False):
        drawn = m.sample(values, return_all=return_all, sample_mean=True)
        out.append((list(drawn), {k: v.clone() for k, v in drawn.items()}))
    return out


@pytest.mark.parametrize("how", ["q*emp", "emp*q", "renamed", "then*r", "two"])
def test_a_marginalized_empirical_variable_is_the_input_and_is_left_out_as_under_pixyz(how: str) -> None:
    """Probe p289: marginalizing the variable of an ``EmpiricalDistribution`` (the data variable) left ``var`` and
    ``input_var`` as Pixyz's, but ``sample`` took the given value out as a variable to draw anew and the empirical
    factor then raised a bare ``KeyError: 'z'`` (Pixyz runs it). Pixyz's graph keeps it as the input the factor
    reads and leaves it out of what ``return_all`` returns, as it leaves out the marginalized variables."""
    def program() -> Any:
        q, emp, r, a = _empirical_joint()
        w = a + 1
        if how == "q*emp":
            m, values = (q * emp).marginalize_var("z"), {"z": a, "w": w}
        elif how == "emp*q":
            m, values = (emp * q).marginalize_var("z"), {"z": a, "w": w}
        elif how == "renamed":
            m, values = (q * emp).replace_var(z="d").marginalize_var("d"), {"d": a, "w": w}
        elif how == "then*r":
            m, values = (q * emp).marginalize_var("z") * r, {"z": a, "w": w}
        else:
            m, values = (r * q * emp).marginalize_var(["x", "z"]), {"z": a, "w": w}
        return sorted(m.var), sorted(m.input_var), _draws(m, values)

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[2][0][0] == ref[2][0][0]  # the keys in Pixyz's order


def test_an_expectation_over_a_marginalized_empirical_variable_matches_pixyz() -> None:
    """Probe p289: ``Expectation`` over such a marginal (it draws from it) raised the same bare ``KeyError``."""
    def program() -> Any:
        import torch

        from pixyz.losses import Expectation, LogProb

        q, emp, r, a = _empirical_joint()
        m = (q * emp).marginalize_var("z")
        torch.manual_seed(3)
        return Expectation(m, LogProb(r)).eval({"z": a, "y": a})

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("op", ["neg", "mean", "sum", "detach"])
def test_a_unary_operator_whose_operand_was_set_to_none_is_named_in_pixyzs_error_class(op: str) -> None:
    """Probe p291: ``o = -lp; o.loss1 = None`` then ``eval`` raised Python's bare ``'NoneType' object has no
    attribute 'eval'`` (Pixyz's too: an ``AttributeError``); it names the operator now, in that class (a binary
    operator counts a ``None`` operand as 0, as Pixyz's does: ``test_diff_round46``)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        p = Normal(loc=0., scale=1., var=["x"])
        lp = p.log_prob()
        o = {"neg": lambda: -lp, "mean": lp.mean, "sum": lp.sum, "detach": lp.detach}[op]()
        o.loss1 = None
        out = []
        for loss in (o, o + 1.0):
            try:
                loss.eval({"x": torch.zeros(2, 1)})
                out.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                out.append((isinstance(e, AttributeError), type(e).__name__, str(e)))
        return out

    ref, ours = run_both(program)
    for pixyz, here in zip(ref, ours):
        assert pixyz is not None and here is not None and pixyz[0] and here[0]  # AttributeError in both
        assert "loss1" in here[2] and "set to None" in here[2] and "'NoneType' object" not in here[2]
        assert here[2].split(":")[0] in ("NegLoss", "BatchMean", "BatchSum", "Detach")


@pytest.mark.parametrize("cls", ["MMD", "WassersteinDistance"])
def test_batch_n_given_to_a_sample_divergences_eval_is_named_in_pixyzs_error_class(cls: str) -> None:
    """Probe p288: ``MMD(p, q).eval(values, batch_n=5)`` raised Python's bare "got multiple values for keyword
    argument 'batch_n'" (a ``TypeError``, Pixyz's too): the number of draws is the loss's own (the input's first dim,
    or the constructor's ``batch_n``); the error says so, in that class. (Their values differ from Pixyz's on
    purpose: ``docs/porting.md``.)"""
    def program() -> Any:
        import torch

        from pixyz import losses
        from pixyz.distributions import Normal

        p = Normal(loc="a", scale=torch.ones(2), var=["z"], cond_var=["a"], name="p")
        q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="q")
        loss = getattr(losses, cls)(p, q)
        values = {"a": torch.zeros(8, 2)}
        shape = tuple(loss.eval(values).shape)  # (runs without batch_n)
        try:
            loss.eval(values, batch_n=5)
        except Exception as e:  # noqa: BLE001 (compared below)
            return shape, isinstance(e, TypeError), str(e)
        return shape, None, None

    ref, ours = run_both(program)
    assert ref[1] and ours[1]
    assert ours[2].startswith(cls) and "batch_n=5" in ours[2] and "first dim of the input" in ours[2]


@pytest.mark.parametrize("kind", ["list", "tensor", "assigned list"])
def test_a_product_of_experts_follows_the_weights_object_it_was_given_as_pixyzs_does(kind: str) -> None:
    """Probe p301: Pixyz's ``ProductOfNormal`` keeps the ``weight_modalities`` object it is given and reads it at each
    use, so ``w[1] = 5.`` afterwards weighs the first expert 5 times; pyro_dgm copied the weights into a buffer and
    went on with [1, 1, 1] (a loc summing to 0.67 where Pixyz's, the closed form's, sums to 2.0)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ProductOfNormal

        ex = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="qx", features_shape=[2])
        ey = Normal(loc="y", scale=torch.tensor(0.5), var=["z"], cond_var=["y"], name="qy", features_shape=[2])
        w = torch.ones(3) if kind == "tensor" else [1., 1., 1.]
        poe = ProductOfNormal([ex, ey], weight_modalities=w)
        x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
        out = [poe.get_params({"x": x, "y": y})["loc"]]
        if kind == "assigned list":  # (Pixyz's attribute is then the new list)
            w = [1., 2., 1.]
            poe.weight_modalities = w
            out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        w[1] = 5.
        out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
    torch.testing.assert_close(ours[-1], (5 * x + 4 * y) / 10)  # precisions 1 + 5 + 4: the closed form


def test_a_mixture_of_normals_follows_its_weights_object_and_refuses_a_change_to_negative_weights() -> None:
    """The same for ``MixtureOfNormal`` (whose density is the mixture's here, by design: ``docs/porting.md``): after
    ``w[0] = 0.75`` its log-density is that of a mixture built with [0.75, 0.25]; a change that makes a weight
    negative is refused by name at the next use (as at construction)."""
    from pyro_dgm.distributions import MixtureOfNormal, Normal

    def mixture(w: Any) -> Any:
        a = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="a")
        b = Normal(loc="y", scale=torch.ones(2), var=["z"], cond_var=["y"], name="b")
        return MixtureOfNormal([a, b], weight_modalities=w)

    values = {"x": torch.zeros(4, 2), "y": torch.ones(4, 2), "z": torch.linspace(-1, 2, 8).reshape(4, 2)}
    w = [0.5, 0.5]
    m = mixture(w)
    torch.testing.assert_close(m.get_log_prob(values), mixture([0.5, 0.5]).get_log_prob(values))
    w[0] = 0.75
    w[1] = 0.25
    torch.testing.assert_close(m.get_log_prob(values), mixture([0.75, 0.25]).get_log_prob(values))
    w[1] = -1.
    with pytest.raises(ValueError, match=r"MixtureOfNormal.*weight_modalities given, changed since, \(\[0.75, -1"):
        m.get_log_prob(values)


@pytest.mark.parametrize("kind", ["list", "tensor", "numpy"])
def test_changes_made_through_the_product_and_to_the_weights_object_combine_as_under_pixyz(kind: str) -> None:
    """A weight changed through the product (``poe.weight_modalities[1] = 5.``) and another changed in the object
    given (``w[2] = 3.``) weigh the experts together, as Pixyz's one object holds both; the object is not written
    (probes p302, p303: writing the product's changes into it rounded the user's numbers to float32, truncated them
    in an integer array, and made its values depend on the order of uses; ``docs/porting.md`` states what differs)."""
    def program() -> Any:
        import numpy as np
        import torch

        from pixyz.distributions import Normal, ProductOfNormal

        ex = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="qx", features_shape=[2])
        ey = Normal(loc="y", scale=torch.tensor(0.5), var=["z"], cond_var=["y"], name="qy", features_shape=[2])
        w = {"list": [1., 0.1, 1.], "tensor": torch.tensor([1., 0.1, 1.]), "numpy": np.array([1., 0.1, 1.])}[kind]
        poe = ProductOfNormal([ex, ey], weight_modalities=w)
        x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
        out = [poe.get_params({"x": x, "y": y})["loc"]]
        poe.weight_modalities[1] = 5.
        out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        w[2] = 3.
        out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        return out, float(w[0])

    ref, ours = run_both(program)
    assert_same(ref[0], ours[0])
    x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
    torch.testing.assert_close(ours[0][-1], (5 * x + 3 * 4 * y) / 18)  # precisions 1 + 5 + 3·4: the closed form
    assert ours[1] == 1.0


def test_the_weights_objects_changes_reach_a_compiled_model_and_bad_values_are_named() -> None:
    """Probe p302: a compiled ``Model`` (whose graph runs no Python) kept training with the first weights after
    ``w[k] = v`` (0.52 where Pixyz, and the eager model, give 1.23); a non-number put into the list was ignored,
    the old weights kept (Pixyz raises ``must be real number, not str``); weights assigned to the product were not
    checked (a negative one gave a bare ``must be real number, not complex`` at the next use)."""
    from pyro_dgm.distributions import Normal, ProductOfNormal
    from pyro_dgm.losses import KullbackLeibler
    from pyro_dgm.models import Model

    def run(compile: Any) -> list[float]:
        torch.manual_seed(0)
        ex = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="qx", features_shape=[2])
        net = torch.nn.Linear(2, 2)

        class Ey(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["y"], name="qy")
                self.net = net

            def forward(self, y):  # type: ignore[no-untyped-def]
                return {"loc": self.net(y), "scale": torch.ones_like(y)}

        w = [1., 1., 1.]
        poe = ProductOfNormal([ex, Ey()], weight_modalities=w)
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2], name="r")
        model = Model(KullbackLeibler(poe, prior).mean(), distributions=[poe], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1}, compile=compile)
        x, y = torch.randn(4, 2, generator=torch.Generator().manual_seed(1)), torch.ones(4, 2)
        out = []
        for k, v in [(None, None), (1, 4.), (2, 0.5), (0, 2.)]:
            if k is not None:
                w[k] = v
            out.append(float(model.train({"x": x.clone(), "y": y.clone()})))
        w[1] = "a"
        with pytest.raises(TypeError, match=r"ProductOfNormal .*weight_modalities must hold numbers.*not str"):
            poe.get_params({"x": x, "y": y})
        with pytest.raises(ValueError, match=r"weight_modalities assigned .*finite non-negative"):
            poe.weight_modalities = [1., -3., 1.]
        return out

    eager = run(False)
    assert eager[1] != pytest.approx(eager[0], rel=1e-3)  # (the weights changed the loss)
    assert run({"backend": "eager"}) == pytest.approx(eager, rel=1e-6)


@pytest.mark.parametrize("case", ["assigned then double", "float64 assigned", "list grown", "set before init"])
def test_weights_objects_at_the_edges_give_pixyzs_numbers(case: str) -> None:
    """Probe p304: a tensor assigned as the weights was no longer followed after ``.double()`` (which replaces the
    buffer); a float64 tensor assigned made the product float64 (a float32 decoder then refused its draw; Pixyz's
    product takes ``torch.Tensor(w)``); a list that grew after construction was refused (Pixyz reads its first
    weights); a subclass setting ``self.weight_modalities`` before ``super().__init__`` raised torch's bare "no
    attribute '_buffers'" (Pixyz's constructor then replaces it)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal, ProductOfNormal

        ex = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="qx", features_shape=[2])
        ey = Normal(loc="y", scale=torch.tensor(0.5), var=["z"], cond_var=["y"], name="qy", features_shape=[2])
        x, y = torch.tensor([[3., 1.]]), torch.tensor([[1., -1.]])
        if case == "set before init":
            class Sub(ProductOfNormal):
                def __init__(self) -> None:
                    self.weight_modalities = [1., 9., 1.]
                    super().__init__([ex, ey], weight_modalities=[1., 2., 1.])

            return Sub().get_params({"x": x, "y": y})["loc"]
        w = [1., 1., 1.]
        poe = ProductOfNormal([ex, ey], weight_modalities=w)
        out = [poe.get_params({"x": x, "y": y})["loc"]]
        if case == "assigned then double":
            t = torch.ones(3)
            poe.weight_modalities = t
            poe.double()
            t[1] = 5.
            out.append(poe.get_params({"x": x.double(), "y": y.double()})["loc"].float())
        elif case == "float64 assigned":
            poe.weight_modalities = torch.tensor([1., 2., 1.], dtype=torch.float64)
            out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        else:
            w.append(2.)
            out.append(poe.get_params({"x": x.clone(), "y": y.clone()})["loc"])
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
