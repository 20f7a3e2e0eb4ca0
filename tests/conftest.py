"""Shared fixtures.

Every test starts from the same random state and an empty Pyro param store (sampling tests are reproducible), on
one torch thread (small networks run faster so, and the CPU may be shared), and the ``vae`` fixture gives the small
encoder/decoder/prior the Loss API tests share (the networks of ``dgm_fixtures.py``).
"""
from __future__ import annotations

import gc

import pyro
import pytest
import torch
from dgm_fixtures import Decoder, Encoder, standard_prior


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption("--validate-args", choices=("on", "off"), default="on",
                     help="torch/Pyro distribution argument validation during the tests (pyro.enable_validation); "
                          "'off' runs the closed-form hot paths of pyro_dgm.distributions.closed_forms")
    parser.addoption("--share-deterministic", choices=("on", "off"), default="off",
                     help="'on' makes every Deterministic opt in to sharing one pass between the uses of one "
                          "evaluation (memoizable = True), to run the suite against the opt-in memoizer; tests "
                          "that count a Deterministic's runs under the default then fail by design")


def pytest_configure(config):  # type: ignore[no-untyped-def]
    if config.getoption("--share-deterministic") == "on":
        from pyro_dgm.distributions import Deterministic

        Deterministic.memoizable = True
    config.addinivalue_line("markers", "needs_validation: asserts an error that only torch's argument validation "
                                       "raises (skipped under --validate-args=off)")
    config.addinivalue_line("markers", "other_processes: its work runs in worker processes (torch.distributed), "
                                       "which --validate-args does not reach: skipped under --validate-args=off, "
                                       "where it would repeat the first run")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    from pyro_dgm.utils.compat import COMPILE_SINCE, compiles

    if not compiles():  # (an older torch: compiling is refused when built, tests/test_torch_compat.py checks that)
        since = ".".join(map(str, COMPILE_SINCE))
        old = pytest.mark.skip(reason=f"compiles pyro_dgm's evaluation, which needs torch >= {since}")
        for item in items:
            if "compile" in item.nodeid.lower() and "test_torch_compat" not in item.nodeid:
                item.add_marker(old)
    if config.getoption("--validate-args") == "off":
        skip = pytest.mark.skip(reason="checks torch's argument validation, which --validate-args=off turns off")
        for item in items:
            if "needs_validation" in item.keywords:
                item.add_marker(skip)
        again = pytest.mark.skip(reason="its workers run with their own argument validation: the first run ran it")
        for item in items:
            if "other_processes" in item.keywords:
                item.add_marker(again)


@pytest.fixture(autouse=True)
def _fresh_state(request):  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # seeds torch, random and numpy
    validate = request.config.getoption("--validate-args") == "on"
    pyro.enable_validation(validate)
    gc.freeze()  # the objects of the imports and of earlier tests are left out of this test's garbage collections
    # (a full collection, which the library makes where it judges a distribution dead, and which the tests of freeing
    # make, took seconds in the whole suite's heap; this test's own cycles are still collected)
    try:
        yield
    finally:
        gc.unfreeze()
    pyro.enable_validation(validate)
    pyro.clear_param_store()
    torch.set_num_threads(threads)


@pytest.fixture
def vae():  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    q, p = Encoder(x_dim=4, z_dim=2), Decoder(x_dim=4, z_dim=2)  # linear: loc and scale heads, probs
    prior = standard_prior(2)
    x = torch.bernoulli(torch.full((8, 4), 0.5))
    return q, p, prior, x
