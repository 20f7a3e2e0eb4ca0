"""Sequential Pixyz programs (``IterativeLoss``), run under Pixyz 0.3.3 and under pyro_dgm with only the import
renamed (:mod:`pixyz_harness`).

Hypothesis draws the programs: a VRNN, a DMM or an RNN-driven model; analytic or sampled KL; with or without a
second series, a time-step variable, a second state to carry over, ``max_iter``, a mask; reduced per step or not;
with arithmetic outside the sum; evaluated and trained by ``Model``. Both libraries must give the same formulas,
values, returned variables and trained weights, or raise the same kind of exception (an error of ours may be a
subclass of Pixyz's: a clearer ValueError that is also the IndexError or RuntimeError that Pixyz raises).
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pixyz_harness import assert_same, raises_same, renamed_import, run_both, run_pixyz, run_pyro_dgm


@st.composite
def sequence_specs(draw: Any) -> dict[str, Any]:
    masked = draw(st.booleans())
    return {"kind": draw(st.sampled_from(["vrnn", "dmm", "rnn"])), "T": draw(st.integers(1, 4)),
            "batch": draw(st.integers(1, 3)), "max_iter": draw(st.sampled_from([None, 0, 1, 2])),
            # a mask multiplies each step's value in place (Pixyz): a per-sample mask needs a per-sample step loss
            "step_reduce": "none" if masked and draw(st.booleans()) else draw(st.sampled_from(["mean", "sum", "none"])),
            "outer": draw(st.sampled_from(["none", "mean", "sum", "neg", "scale", "twice"])),
            "mask": masked, "timestep": draw(st.booleans()), "analytic": draw(st.booleans()),
            "with_y": draw(st.booleans()), "train": draw(st.sampled_from([2, 0])),
            "carry_z": draw(st.booleans())}


def sequence_program(spec: dict[str, Any]) -> Any:
    def program() -> Any:
        import torch
        from torch import nn, optim
        import pixyz.distributions as D
        import pixyz.losses as L
        from pixyz.models import Model

        T, B, xd, zd, hd = spec["T"], spec["batch"], 3, 2, 4
        kind, ts = spec["kind"], spec["timestep"]
        state = "z_prev" if kind == "dmm" else "h_prev"  # what q and the prior condition on
        state_dim = zd if kind == "dmm" else hd

        def normal_params(o: Any) -> dict[str, Any]:
            return {"loc": o[..., :zd], "scale": nn.functional.softplus(o[..., zd:]) + 0.1}

        class Q(D.Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x", state] + (["t"] if ts else []), name="q")
                self.fc = nn.Linear(xd + state_dim + ts, 2 * zd)

            def forward(self, x, h_prev=None, z_prev=None, t=None):  # Pixyz passes the inputs by name
                parts = [x, h_prev if z_prev is None else z_prev]
                if ts:
                    parts.append(torch.full((x.shape[0], 1), float(t)))
                return normal_params(self.fc(torch.cat(parts, -1)))

        class Prior(D.Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=[state], name="p_{prior}")
                self.fc = nn.Linear(state_dim, 2 * zd)

            def forward(self, **inputs):
                return normal_params(self.fc(inputs[state]))

        class Decoder(D.Bernoulli):
            def __init__(self):
                super().__init__(var=["x"], cond_var=["z", "h_prev"] if kind == "vrnn" else ["z"], name="p")
                self.fc = nn.Linear(zd + (hd if kind == "vrnn" else 0), xd)

            def forward(self, z, h_prev=None):
                return {"probs": torch.sigmoid(self.fc(z if h_prev is None else torch.cat([z, h_prev], -1)))}

        class Recurrence(D.Deterministic):
            def __init__(self):
                inputs = ["x", "z", "h_prev"] if kind == "vrnn" else ["x", "h_prev"]
                super().__init__(var=["h"], cond_var=inputs, name="f")
                self.rnn = nn.GRUCell(xd + (zd if kind == "vrnn" else 0), hd)

            def forward(self, x, h_prev, z=None):
                return {"h": self.rnn(x if z is None else torch.cat([x, z], -1), h_prev)}

        class Label(D.Normal):
            def __init__(self):
                super().__init__(var=["y"], cond_var=["z"], name="p_{y}")
                self.fc = nn.Linear(zd, 1)

            def forward(self, z):
                return {"loc": self.fc(z), "scale": torch.ones(z.shape[:-1] + (1,))}

        q, prior, decoder = Q(), Prior(), Decoder()
        dists = [q, prior, decoder]
        kl = (L.KullbackLeibler(q, prior) if spec["analytic"]
              else L.Expectation(q, L.LogProb(q) - L.LogProb(prior)))
        step = kl - L.Expectation(q, L.LogProb(decoder))
        update = {"z": "z_prev"} if kind == "dmm" else {"h": "h_prev"}
        if kind == "vrnn":
            f = Recurrence()
            dists.append(f)
            step = step.expectation(q * f)
        elif kind == "rnn":
            f = Recurrence()
            dists.append(f)
            step = L.Expectation(f, step)
        if spec["with_y"]:
            label = Label()
            dists.append(label)
            step = step - L.Expectation(q, L.LogProb(label))
        if spec["carry_z"] and kind != "dmm":
            update["z"] = "z_prev"  # a second state carried over (no distribution reads it)
        step = {"mean": step.mean, "sum": step.sum, "none": lambda: step}[spec["step_reduce"]]()
        options: dict[str, Any] = {"series_var": ["x", "y"] if spec["with_y"] else ["x"], "update_value": update}
        if spec["max_iter"] is not None:
            options["max_iter"] = spec["max_iter"]
        if ts:
            options["timestep_var"] = ["t"]
        loss = L.IterativeLoss(step, **options)
        loss = {"none": lambda: loss, "mean": loss.mean, "sum": loss.sum, "neg": lambda: -loss,
                "scale": lambda: 0.5 * loss, "twice": lambda: loss + 0.5 * loss}[spec["outer"]]()

        data = {"x": torch.bernoulli(torch.full((T, B, xd), 0.4)), state: torch.zeros(B, state_dim)}
        if spec["with_y"]:
            data["y"] = torch.randn(T, B, 1)
        if spec["carry_z"] and kind != "dmm":
            data["z_prev"] = torch.zeros(B, zd)

        def fresh() -> dict[str, Any]:  # Pixyz's cache is keyed by the input tensors: a new tensor per call
            return {k: v.clone() for k, v in data.items()}

        kwargs = {"mask": torch.tensor([1., 0., 1., 1.])[:T, None].expand(T, B).clone()} if spec["mask"] else {}
        # (Expectation's input_var is a set under Pixyz: its order is the hash seed's, so it is compared sorted)
        out: dict[str, Any] = {"text": str(loss), "latex": loss.loss_text, "input_var": sorted(loss.input_var)}
        given = fresh()
        value, returned = loss.eval(given, return_dict=True, **kwargs)
        out["eval"] = value
        out["returned"] = {k: tuple(v.shape) if torch.is_tensor(v) else v for k, v in returned.items()}
        out["inputs_after"] = given
        out["eval_again"] = loss.eval(fresh(), **kwargs)
        if spec["train"]:
            model = Model(loss if value.dim() == 0 else loss.mean(), distributions=dists, optimizer=optim.Adam,
                          optimizer_params={"lr": 1e-2})
            out["steps"] = [model.train(fresh()) for _ in range(spec["train"])]
            out["weights"] = [w.detach().clone() for d in dists for w in d.parameters()]
        return out
    return program


def _outcome(run: Any, program: Any) -> tuple[str, Any]:
    try:
        return "ok", run(program)
    except Exception as e:  # noqa: BLE001 (the kind of failure is what is compared)
        return "raises", e


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=sequence_specs())
def test_random_sequential_programs_match_pixyz(spec: dict[str, Any]) -> None:
    program = sequence_program(spec)
    (k1, r1), (k2, r2) = _outcome(run_pixyz, program), _outcome(run_pyro_dgm, program)
    assert k1 == k2, f"Pixyz: {k1} {r1 if k1 == 'raises' else ''}; pyro_dgm: {k2} {r2 if k2 == 'raises' else ''}"
    if k1 == "ok":  # the weights after two Adam steps: float32 rounding of two summation orders
        assert_same(r1, r2, rtol=1e-4, atol=1e-5)
    elif not (spec["mask"] and spec["max_iter"] and spec["max_iter"] > spec["T"]):  # (two faults: either is first)
        assert isinstance(r2, type(r1)), f"Pixyz raises {type(r1).__name__}: {r1}; pyro_dgm {type(r2).__name__}: {r2}"


# ---------------------------------------------------------------------------------------------------------------
# IterativeLoss's edge cases


def _max_iter_forms() -> Any:
    """``max_iter=0`` means the length of the first series (Pixyz tests ``if self.max_iter``), and any integer type
    that ``range`` takes is a number of steps (a negative one, none: we refused it when the loss was built)."""
    import numpy as np
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
    step = p.log_prob()
    x, z = torch.randn(3, 2, 1), torch.randn(3, 2, 1)
    zero = IterativeLoss(step, max_iter=0, series_var=["x", "z"])
    numpy_int = IterativeLoss(step, max_iter=np.int64(2), series_var=["x", "z"])
    negative = IterativeLoss(step, max_iter=-1, series_var=["x", "z"])  # range(-1): no step, the loss is 0
    return [str(zero), zero.loss_text, zero.eval({"x": x, "z": z}), str(numpy_int),
            numpy_int.eval({"x": x, "z": z}), str(negative), negative.eval({"x": x, "z": z}), x, z]


def test_max_iter_forms_as_pixyz() -> None:
    import torch

    ref, ours = run_both(_max_iter_forms)
    assert_same(ref, ours)
    x, z = ours[-2:]
    per_step = torch.distributions.Normal(z, 1.0).log_prob(x).sum(-1)  # (T, batch)
    torch.testing.assert_close(ours[2], per_step.sum(0))  # max_iter=0: all three steps
    torch.testing.assert_close(ours[4], per_step[:2].sum(0))
    assert ours[6] == 0


def _short_series() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
    IterativeLoss(p.log_prob(), max_iter=4, series_var=["x", "z"]).eval({"x": torch.randn(3, 2, 1),
                                                                          "z": torch.randn(3, 2, 1)})


def _mask_wider_than_the_step() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
    loss = IterativeLoss(p.log_prob().mean(), series_var=["x", "z"])  # one value per step, a mask per sample
    loss.eval({"x": torch.randn(3, 2, 1), "z": torch.randn(3, 2, 1)}, mask=torch.ones(3, 2))


@pytest.mark.parametrize("program, pixyz_error", [(_short_series, IndexError), (_mask_wider_than_the_step,
                                                                                RuntimeError)],
                         ids=["short_series", "mask_wider_than_the_step"])
def test_errors_are_pixyzs_kind_and_name_what_is_wrong(program: Any, pixyz_error: type) -> None:
    with pytest.raises(pixyz_error):
        run_pixyz(program)
    with pytest.raises(ValueError) as info:  # ours: a ValueError that Pixyz's except clause also catches
        run_pyro_dgm(program)
    assert isinstance(info.value, pixyz_error)
    assert "IterativeLoss" in str(info.value)
    assert ("series_var 'x'" in str(info.value)) or ("mask[0] has shape (2,)" in str(info.value))


def test_a_mask_per_sample_weights_each_steps_values() -> None:
    """mask[t] multiplies step t's per-sample values (checked against the sum written out)."""
    import torch

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
    x, z = torch.randn(3, 2, 1), torch.randn(3, 2, 1)
    mask = torch.tensor([[1., 0.], [0., 1.], [1., 1.]])
    value = IterativeLoss(p.log_prob(), series_var=["x", "z"]).eval({"x": x, "z": z}, mask=mask)
    per_step = torch.distributions.Normal(z, 1.0).log_prob(x).sum(-1)  # (T, batch)
    torch.testing.assert_close(value, (per_step * mask).sum(0))


def _iterative_with_keywords(options: dict[str, Any]) -> Any:
    def program() -> Any:
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import Expectation, IterativeLoss, LogProb

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")

            def forward(self, x, shift=0.0):  # type: ignore[no-untyped-def]
                return {"loc": x + shift, "scale": torch.ones_like(x)}

        p = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="p")
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_z")
        x = torch.randn(3, 4, 2)
        out = {}
        for name, q in (("conditional", Q()), ("prior", prior)):
            loss = IterativeLoss(Expectation(q, LogProb(p)).mean(), series_var=["x"])
            out[name] = loss.eval({"x": x}, **options)
        step = IterativeLoss(LogProb(p), series_var=["x"])
        out["log_prob"] = step.eval({"x": x, "z": torch.zeros(4, 2)}, **options)
        return out
    return program


@pytest.mark.parametrize("options", [{"sample_mean": True}, {"reparam": False}, {"batch_n": 5},
                                     {"sum_features": False}, {"feature_dims": None}, {"foo": 1}],
                         ids=lambda o: next(iter(o)))
def test_iterative_loss_passes_no_option_to_its_step_loss(options: dict[str, Any]) -> None:
    # Pixyz's IterativeLoss evaluates its step loss with no keyword: eval's options do not reach sample/get_log_prob
    assert_same(*run_both(_iterative_with_keywords(options)))


def test_a_keyword_a_network_names_still_reaches_it_inside_an_iterative_loss() -> None:
    # as everywhere here (docs/porting.md): forward(self, x, shift=0.0) gets eval's shift; Pixyz drops it
    ref, ours = run_both(_iterative_with_keywords({"shift": 1.0}))
    base_ref, base_ours = run_both(_iterative_with_keywords({}))
    assert_same(ref, base_ref)  # Pixyz: as if not given
    assert_same(ours["prior"], base_ours["prior"])  # nothing names it there
    assert not bool((ours["conditional"] - base_ours["conditional"]).abs() < 1e-3)  # it moved q's draws


def prog_iterative_loss_attributes_as_given() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss, KullbackLeibler, LogProb

    q = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
    by_steps = IterativeLoss(KullbackLeibler(q, prior), max_iter=3)
    by_tuple = IterativeLoss(KullbackLeibler(q, prior), series_var=("x",))
    out: dict[str, Any] = {"defaults": (repr(by_steps.series_var), repr(by_steps.timestep_var)),
                           "a tuple": repr(by_tuple.series_var)}
    out["a float max_iter prints"] = str(IterativeLoss(KullbackLeibler(q, prior), max_iter=2.0, series_var=["x"]))
    # the update_value dict is the caller's: an entry added after the loss is built is used
    p = Normal(loc="z_prev", scale=torch.ones(2), var=["z"], cond_var=["z_prev"], name="p")
    updates: dict[str, str] = {}
    loss = IterativeLoss(LogProb(prior).expectation(p), max_iter=3, update_value=updates)
    updates["z"] = "z_prev"
    value, values = loss.eval({"z_prev": torch.zeros(3, 2)}, return_dict=True)
    out["edited update_value"] = (value, sorted(values), loss.update_value)
    return out


def test_iterative_loss_keeps_its_arguments_as_given() -> None:
    assert_same(*run_both(prog_iterative_loss_attributes_as_given))


def test_a_float_max_iter_is_refused_when_evaluated_as_under_pixyz() -> None:
    from pyro_dgm.losses.special import LossArgumentError

    def program() -> Any:
        import torch
        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss, KullbackLeibler
        q = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q")
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
        loss = IterativeLoss(KullbackLeibler(q, prior), max_iter=2.0, series_var=["x"])
        return loss.eval({"x": torch.zeros(3, 1, 2)})

    with pytest.raises(TypeError):
        run_pixyz(program)
    with pytest.raises(LossArgumentError, match="IterativeLoss: max_iter must be an int, got 2.0"):
        run_pyro_dgm(program)


def prog_slice_step_given_a_function() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss, LogProb
    p = Normal(loc="h", scale=torch.tensor(1.), var=["x"], cond_var=["h"], name="p")
    return IterativeLoss(LogProb(p), max_iter=3, series_var=["x", "h"], slice_step=lambda t, d: d)


def test_a_slice_step_that_is_no_distribution_names_iterative_loss() -> None:
    """Pixyz: AttributeError ('function' object has no attribute 'input_var'); ours was a TypeError about
    ``Expectation: p``; it now names IterativeLoss's slice_step and is both types."""
    pixyz_error, ours = raises_same(prog_slice_step_given_a_function)
    assert issubclass(ours, pixyz_error) and issubclass(ours, TypeError)
    with renamed_import(), pytest.raises(ours, match=r"IterativeLoss: slice_step must be a pyro_dgm distribution"):
        prog_slice_step_given_a_function()
