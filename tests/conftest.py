"""Shared fixtures: every test starts from the same random state, so sampling tests are reproducible."""
import pyro
import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    pyro.set_rng_seed(0)  # seeds torch, random and numpy
