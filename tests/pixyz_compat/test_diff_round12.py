"""Twelfth round: a fuzzer of whole training programs (the Model API over several steps) under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`).

- A parameter frozen (``requires_grad=False``) when the ``Model`` was built was left out of its optimizer, so it
  stayed frozen after the user unfroze it (a warm-up, fine-tuning): Pixyz's optimizer holds every parameter of
  ``distributions``. The optimizer's state (its parameter indices, Adagrad's state of every parameter) differed too.
"""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both
from pixyz_parts import vae_parts


def _frozen_decoder_program(optimizer: str) -> Any:
    def program() -> Any:
        from torch import optim

        from pixyz.losses import ELBO
        from pixyz.models import Model

        q, p, prior, x = vae_parts()
        p.fc.requires_grad_(False)  # the decoder frozen for a warm-up
        model = Model((-ELBO(p * prior, q)).mean(), distributions=[q, p], optimizer=getattr(optim, optimizer),
                      optimizer_params={"lr": 0.1})
        w0 = p.fc.weight.detach().clone()
        losses = []
        for i in range(5):
            if i == 2:
                p.fc.requires_grad_(True)  # the warm-up is over: the decoder is trained too
            losses.append(model.train({"x": x.clone()}))  # (a new tensor: Pixyz caches by identity)
        state = model.optimizer.state_dict()
        return {"losses": losses, "decoder_moved": bool((p.fc.weight != w0).any()), "weights": p.fc.weight,
                "n_params": len(state["param_groups"][0]["params"]), "state_keys": sorted(state["state"]),
                "state": {k: dict(v) for k, v in state["state"].items()}}
    return program


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "Adagrad"])
def test_a_parameter_frozen_when_the_model_is_built_is_trained_once_unfrozen(optimizer: str) -> None:
    ref, ours = run_both(_frozen_decoder_program(optimizer))
    assert ref["decoder_moved"] and ref["n_params"] == 4  # (the program tests what it means to)
    assert_same(ref, ours)
