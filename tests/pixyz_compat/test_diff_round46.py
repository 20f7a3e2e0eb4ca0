"""Forty-sixth round: an adversarial term whose discriminator was deleted (probe p273), under Pixyz and here
(:mod:`pixyz_harness`)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import run_both

from test_diff_round45 import _gan_parts


def _js_term() -> Any:
    """An adversarial Jensen-Shannon term between data and a generator, with the discriminator's class and a batch
    (Pixyz's imports when called: pyro_dgm's inside the harness's programs)."""
    import torch
    from torch import optim

    from pixyz.distributions import EmpiricalDistribution
    from pixyz.losses import AdversarialJensenShannon

    torch.manual_seed(0)
    generator, Dc = _gan_parts()
    term = AdversarialJensenShannon(EmpiricalDistribution(["x"]), generator, Dc(), optimizer=optim.SGD,
                                    optimizer_params={"lr": 0.1})
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)) + 2
    return term, generator, Dc, x


def test_a_deleted_discriminator_is_named_and_one_put_back_trains_as_under_pixyz() -> None:
    """Probe p273: ``del loss.d``, then an evaluation and a discriminator step: Pixyz raises ``AttributeError``
    naming ``d``; pyro_dgm raised one about ``None`` (``'NoneType' object has no attribute 'input_var'``) naming
    neither the term nor ``d``. A discriminator put back afterwards is the one used, as under Pixyz."""
    def program() -> Any:
        from torch import optim

        term, _, Dc, x = _js_term()
        del term.d
        errors = []
        for call in (lambda: term.eval({"x": x}), lambda: term.loss_train({"x": x}), lambda: term.d):
            try:
                call()
                errors.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                errors.append((type(e).__name__, str(e)))
        d2 = Dc()
        term.d = d2
        term.d_optimizer = optim.SGD(d2.parameters(), lr=0.1)
        values = [float(term.loss_train({"x": x})) for _ in range(2)] + [float(term.eval({"x": x}))]
        return errors, values, [p.detach().clone() for p in d2.parameters()]

    ref, ours = run_both(program)
    for (pixyz_cls, pixyz_text), (cls, text) in zip(ref[0], ours[0]):
        assert pixyz_cls == cls == "AttributeError" and "'d'" in pixyz_text
        assert "AdversarialJensenShannon" in text and "no discriminator d" in text and "deleted" in text
    assert ours[1] == pytest.approx(ref[1], rel=1e-6)
    for a, b in zip(ref[2], ours[2]):
        torch.testing.assert_close(b, a)


def test_an_input_that_is_not_a_tensor_given_to_torch_cat_is_named() -> None:
    """Probe p274: a value that is not a tensor reaching ``torch.cat`` in ``forward`` (the usual CVAE pattern): Pixyz
    raises torch's ``TypeError`` ("expected Tensor as element 0 in argument 0, but got str"); pyro_dgm raised the same
    text, naming neither the distribution nor the variable (it named them where the network took the value itself)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x", "y"], name="q")
                self.net = nn.Linear(4, 2)

            def forward(self, x, y):  # type: ignore[no-untyped-def]
                return {"loc": self.net(torch.cat([x, y], -1)), "scale": torch.ones(2)}

        prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p")
        out = []
        for bad in ("abc", None, object()):
            try:
                KullbackLeibler(Q(), prior).eval({"x": bad, "y": torch.zeros(1, 2)})
                out.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                out.append((isinstance(e, TypeError), str(e)))
        return out

    ref, ours = run_both(program)
    for (pixyz_type_error, pixyz_text), (type_error, text) in zip(ref, ours):
        assert pixyz_type_error and type_error and "but got" in pixyz_text
        assert "q(z|x,y)" in text and "'x'" in text and "takes tensors" in text


def test_a_model_built_while_the_discriminator_is_deleted_trains_once_one_is_put_back() -> None:
    """Probe p276: ``del term.d``, then ``Model(term, ...)``, then a discriminator put back: Pixyz builds the model
    and trains; pyro_dgm refused the model (the check of which parameters it trains read the missing ``d``)."""
    def program() -> Any:
        from torch import optim

        from pixyz.models import Model

        term, generator, _, x = _js_term()
        d0 = term.d
        del term.d
        model = Model(term, distributions=[generator], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        term.d = d0
        term.d_optimizer = optim.SGD(d0.parameters(), lr=0.1)
        out = []
        for _ in range(2):
            out.append(float(term.loss_train({"x": x})))
            out.append(float(model.train({"x": x})))
        out.append(float(model.test({"x": x})))
        term.add_module("d", None)  # (Pixyz's term.d reads None; evaluating then fails in both)
        return out, term.d is None

    ref, ours = run_both(program)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    assert ref[1] and ours[1]


def test_a_number_input_is_not_blamed_for_a_networks_own_constant_given_to_torch_cat() -> None:
    """Probe p276: a network that multiplies by a number input ``beta`` and gives its own float to ``torch.cat``
    ("but got float"): torch's ``TypeError`` as under Pixyz, not one telling to give ``beta`` as a tensor."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x", "beta"], name="p")
                self.net = nn.Linear(2, 2)
                self.pad = 1.0

            def forward(self, x, beta):  # type: ignore[no-untyped-def]
                h = self.net(x) * beta
                return {"loc": torch.cat([h, self.pad], -1), "scale": torch.ones(3)}

        try:
            P().get_log_prob({"x": torch.zeros(2, 2), "beta": 0.5, "y": torch.zeros(2, 3)})
        except TypeError as e:
            return str(e)
        return None

    ref, ours = run_both(program)
    assert ref == ours == "expected Tensor as element 1 in argument 0, but got float"


@pytest.mark.parametrize("names_beta", [False, True])
def test_a_users_get_params_gets_no_keywords_as_under_pixyz(names_beta: bool) -> None:
    """Probes p277, p278: a ``get_params(self, params_dict={})`` override (a floor on the scale), and a loss evaluated
    or trained with an extra keyword (``beta=0.5``): Pixyz calls the override with the inputs alone; pyro_dgm passed
    it the keyword (``TypeError: got an unexpected keyword argument 'beta'``), and an override that names ``beta``
    must keep its default (Pixyz's numbers), not take the call's."""
    def program() -> Any:
        import torch
        import torch.nn.functional as F
        from torch import nn, optim

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc = nn.Linear(2, 4)

            def forward(self, x):  # type: ignore[no-untyped-def]
                h = self.fc(x)
                return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:])}

        class Floor(Q):
            def get_params(self, params_dict={}):  # type: ignore[no-untyped-def]  # noqa: B006 (as users write it)
                out = dict(super().get_params(params_dict))
                out["scale"] = out["scale"] + 0.1
                return out

        class FloorBeta(Q):
            def get_params(self, params_dict={}, beta=1.0):  # type: ignore[no-untyped-def]  # noqa: B006
                out = dict(super().get_params(params_dict))
                out["scale"] = out["scale"] + 0.1 * beta
                return out

        torch.manual_seed(0)
        q = FloorBeta() if names_beta else Floor()
        prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
        x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
        kl = KullbackLeibler(q, prior)
        values = [kl.eval({"x": x}, beta=0.5), q.log_prob().eval({"x": x, "z": x}, beta=0.5)]
        model = Model(kl.mean(), distributions=[q], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        values.append(model.train({"x": x.clone()}, beta=0.5))
        return [v.detach() for v in values]

    ref, ours = run_both(program)
    for a, b in zip(ref, ours):
        torch.testing.assert_close(b, a)


def test_an_operand_set_to_none_after_the_operator_was_made_counts_as_0() -> None:
    """Probe p278: ``s = lp + lp; s.loss2 = None`` (and ``(lp - 2).loss1 = None``): Pixyz's operator evaluates a
    ``None`` operand as 0; pyro_dgm kept evaluating the operand it was built with (-3.81 where Pixyz gives -1.90),
    then, once a module's place set to None was read as None, raised ``'NoneType' object has no attribute 'eval'``."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        p = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["x"], features_shape=[2])
        lp = p.log_prob()
        x = torch.tensor([[0.1, -0.3]])
        s = lp + lp
        s.loss2 = None
        d = lp - 2
        d.loss1 = None
        values = [float(s.eval({"x": x})), float(d.eval({"x": x}))]
        from pixyz.losses import Parameter

        bad = Parameter("x") + Parameter("y")
        bad.loss2 = None
        try:  # (probe p281: a value that cannot be added to the 0 of the None operand)
            bad.eval({"x": "abc", "y": 1.0})
        except TypeError as e:
            return values, str(e)
        return values, None

    ref, ours = run_both(program)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    assert ref[1] is not None and ours[1] is not None and "None" in ours[1] and "'x'" in ours[1]


def test_a_discriminator_added_by_add_module_is_checked_as_one_assigned() -> None:
    """Probe p278: ``loss.add_module("d", Dis(cond_var=["w"]))``, a discriminator of another variable than the
    compared ones: Pixyz raises ``ValueError: Input keys are not valid`` at the next evaluation; pyro_dgm took it and
    raised a bare ``KeyError: 'w'``. It is refused as ``loss.d = ...`` refuses it (a ``ValueError`` naming the term,
    the discriminator and the variables), leaving the term with its discriminator."""
    def program() -> Any:
        term, _, Dc, x = _js_term()
        out = []
        for how in ("add_module", "register_module"):
            try:
                getattr(term, how)("d", Dc("w"))
                term.eval({"x": x})
                out.append(None)
            except Exception as e:  # noqa: BLE001 (compared below)
                out.append((type(e).__name__, isinstance(e, ValueError), str(e)))
        return out

    ref, ours = run_both(program)
    for pixyz_error, error in zip(ref, ours):
        assert pixyz_error[1] and "Input keys are not valid" in pixyz_error[2]
        assert error[1] and "AdversarialJensenShannon" in error[2] and "'w'" in error[2]


def _mistakes() -> Any:
    """Newcomers' mistakes (probe p280), each run and its error's classes (the MRO's names) and text kept."""
    import torch
    from torch import nn

    from pixyz import flows
    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import KullbackLeibler, LogProb
    from pixyz.models import Model

    class Q(Normal):
        def __init__(self, out: Any) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.out = out

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.out(x)

    class Det(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="p")

        def forward(self, x):  # type: ignore[no-untyped-def]
            return x * 2

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p_{prior}")
    x = torch.zeros(3, 2)
    q = Q(lambda x: {"loc": x, "scale": torch.ones_like(x)})
    q.net = nn.Linear(2, 2)  # (something to train)
    model = Model(q.log_prob().mean(), distributions=[q])
    cases = {
        "forward returns a tuple": lambda: Q(lambda x: (x, x.exp())).sample({"x": x}),
        "forward returns a tensor": lambda: Q(lambda x: x).sample({"x": x}),
        "Deterministic returns a tensor": lambda: Det().sample({"x": x}),
        "prior * 2": lambda: prior * 2,
        "eval of a tensor": lambda: LogProb(prior).eval(x),
        "train of a list": lambda: model.train([x]),
        "KL of a torch distribution": lambda: KullbackLeibler(prior, torch.distributions.Normal(0.0, 1.0)),
        "Model of a function": lambda: Model(lambda d: 0, distributions=[prior]),
        "PlanarFlow of 0 features": lambda: flows.PlanarFlow(0),
        "an empty FlowList": lambda: flows.FlowList([]),
        "Expectation of a layer": lambda: LogProb(nn.Linear(2, 2)),
    }
    out = {}
    for name, call in cases.items():
        try:
            call()
            out[name] = None
        except Exception as e:  # noqa: BLE001 (compared below)
            out[name] = ([k.__name__ for k in type(e).__mro__], str(e))
    return out


def test_a_newcomers_mistake_raises_an_error_of_pixyzs_class_naming_things() -> None:
    """Probe p280: where Pixyz's code fails on a mistake with ``AttributeError`` (reading ``.keys()`` or ``.var``
    of the wrong kind of value), ``IndexError`` or ``ZeroDivisionError``, pyro_dgm's error named the distribution or
    loss but was a plain ``TypeError``/``ValueError``, which a Pixyz program's ``except`` did not catch: it is also
    of Pixyz's class now."""
    ref, ours = run_both(_mistakes)
    assert ref.keys() == ours.keys()
    for name in ref:
        pixyz_classes, pixyz_text = ref[name]
        classes, text = ours[name]
        assert pixyz_classes[0] in classes, (name, pixyz_classes[0], classes)
        assert "TypeError" in classes or "ValueError" in classes, (name, classes)
        assert text != pixyz_text and ":" in text, (name, text)  # (ours, naming the class or term first)


def test_a_flow_that_refuses_the_priors_draw_names_the_distribution_and_the_variable() -> None:
    """Probe p280: a flow of 3 features under a prior of 2 refused the draw naming the flow only (its score named the
    distribution and the variable)."""
    from pyro_dgm import flows
    from pyro_dgm.distributions import Normal, TransformedDistribution

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    p = TransformedDistribution(prior, flows.PlanarFlow(3), var=["x"])
    with pytest.raises(ValueError, match=r"p\(x\): cannot draw 'x': PlanarFlow") as e:
        p.sample(batch_n=2)
    assert isinstance(e.value, RuntimeError)  # (torch's class for the shapes it cannot multiply, Pixyz's error)


def test_fit_names_a_loss_that_is_no_loss_set_by_a_subclass_as_train_names_it() -> None:
    """Probe p282: a ``Model`` subclass that sets Pixyz's attributes itself (no ``Model.__init__``) with
    ``loss_cls = p.log_prob().mean`` (the call left off): ``train`` named it; ``fit`` raised a bare
    ``'function' object has no attribute 'input_var'``."""
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import Model
    from pyro_dgm.utils.checks import ArgumentError

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    p.net = nn.Linear(1, 1)

    class My(Model):
        def __init__(self, loss: Any) -> None:  # (Pixyz's attributes, as a subclass of its Model sets them)
            self.loss_cls = self.test_loss_cls = loss
            self.distributions = nn.ModuleList([p])
            self.optimizer = torch.optim.Adam(self.distributions.parameters())
            self.clip_norm = self.clip_value = None
            self.retain_graph = False

    x = {"x": torch.randn(4, 2)}
    for run in (lambda m: m.train(x), lambda m: m.fit([x], epochs=1)):
        with pytest.raises(ArgumentError, match="My: loss_cls must be a pyro_dgm Loss"):
            run(My(p.log_prob().mean))


def test_relaxed_draws_with_a_sample_shape_have_pixyzs_shape() -> None:
    """Probe p284: a relaxed family with a constant temperature of shape (1, K) or (N, 1) (kept with Pixyz's leading
    batch dim of 1) beside probabilities of N rows, drawn with ``sample_shape=(2,)``: Pixyz's (2, N, K) and the same
    numbers; the draw of a batch of temperatures (probe p279) expanded the distribution to (1, N, K) first, which
    gave (2, 1, N, K)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical

        out = []
        for cls in (RelaxedBernoulli, RelaxedCategorical):
            for shape in [(1, 4), (3, 1)]:
                p = cls(var=["x"], cond_var=["pp"], name="p", probs="pp", temperature=torch.full(shape, 0.5))
                torch.manual_seed(1)
                pp = torch.softmax(torch.randn(3, 4), -1)
                out.append(p.sample({"pp": pp}, sample_shape=torch.Size([2]))["x"])
                out.append(p.sample({"pp": pp})["x"])
        return out

    ref, ours = run_both(program)
    for a, b in zip(ref, ours):
        assert b.shape == a.shape
        torch.testing.assert_close(b, a)


def test_an_operator_holding_a_none_operand_inside_another_is_named_in_its_error() -> None:
    """Probe p284: ``inner.loss1 = None`` inside ``AddLoss(inner, ValueLoss(torch.ones(4)))`` whose values do not
    broadcast (3 against 4): Pixyz raises torch's ``RuntimeError``; pyro_dgm raised a bare ``AttributeError``
    reading the inner operator's text. A ``ShapeError`` (also that RuntimeError) naming both now."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses.losses import AddLoss, ValueLoss

        p = Normal(var=["x"], loc=torch.zeros(2), scale=torch.ones(2), name="p")
        inner = AddLoss(-p.log_prob(), -p.log_prob())
        inner.loss1 = None
        try:
            AddLoss(inner, ValueLoss(torch.ones(4))).eval({"x": torch.zeros(3, 2)})
        except RuntimeError as e:
            return str(e)
        return None

    ref, ours = run_both(program)
    assert ref is not None and ours is not None and "AddLoss" in ours and "(4,)" in ours


def test_fit_names_a_test_loss_set_to_none_and_a_loss_held_as_a_module() -> None:
    """Probe p284: ``fit(test_data=...)`` after ``model.test_loss_cls = None`` gave ``'NoneType' object has no
    attribute 'input_var'`` (``test`` named it), and a ``Model`` subclass that is an ``nn.Module`` holding an
    ``nn.Linear`` as its ``loss_cls`` escaped the check of ``fit`` (kept in ``_modules``, not ``__dict__``)."""
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import Model
    from pyro_dgm.models.errors import ModelArgumentError
    from pyro_dgm.utils.checks import ArgumentError

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    p.net = nn.Linear(1, 1)
    x = {"x": torch.randn(4, 2)}
    model = Model(p.log_prob().mean(), distributions=[p])
    model.test_loss_cls = None
    with pytest.raises(ModelArgumentError, match="Model: "):
        model.fit([x], epochs=1, test_data=[x])

    class B(Model, nn.Module):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self.loss_cls = self.test_loss_cls = nn.Linear(2, 2)
            self.distributions = nn.ModuleList([p])
            self.optimizer = torch.optim.Adam(self.distributions.parameters())
            self.clip_norm = self.clip_value = None
            self.retain_graph = False

    for run in (lambda m: m.train(x), lambda m: m.fit([x], epochs=1)):
        with pytest.raises(ArgumentError, match="B: loss_cls must be a pyro_dgm Loss"):
            run(B())


def test_a_batch_of_temperatures_with_a_leading_1_draws_in_pixyzs_shape() -> None:
    """Probe p285: temperatures of shape (1, N, 1) beside probabilities of one row, drawn with ``sample_shape`` (2,)
    and (2, 3): Pixyz's (2, N, K) and (2, 3, N, K) (its leading 1 lies left of the sample dims in torch's
    broadcasting); the draw of independent rows (probe p279) gave (2, 1, N, K). The rows stay independent."""
    def program() -> Any:
        import torch

        from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical

        out = []
        for cls in (RelaxedBernoulli, RelaxedCategorical):
            p = cls(var=["x"], cond_var=["t"], name="p", probs=torch.tensor([0.2, 0.3, 0.5]), temperature="t")
            for shape in ([], [2], [2, 3]):
                out.append(tuple(p.sample({"t": torch.full((1, 4, 1), 0.5)}, sample_shape=shape)["x"].shape))
        return out

    ref, ours = run_both(program)
    assert ours == ref


def test_strict_broadcasting_names_an_operator_holding_a_none_operand() -> None:
    """Probe p285: under ``strict_broadcasting()``, an operator holding an operand set to ``None`` inside another whose
    values would broadcast to a shape neither has: a bare ``'AddLoss' object has no attribute 'latex'``; the
    ``ValueError`` naming both, as without the ``None``."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses.operators import strict_broadcasting

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    inner = p.log_prob() + p.log_prob()
    inner.loss2 = None
    x = torch.zeros(4, 2)
    assert torch.allclose(inner.eval({"x": x}), p.log_prob().eval({"x": x}))
    with strict_broadcasting():
        for loss in (inner + torch.ones(4, 1), torch.ones(4, 1) * inner):
            with pytest.raises(ValueError, match=r"cannot combine .*AddLoss of shape \(4,\)"):
                loss.eval({"x": x})
