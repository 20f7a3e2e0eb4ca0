"""Fixtures of the loss tests."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch._dynamo as dynamo


@pytest.fixture
def reset_dynamo() -> Iterator[None]:
    """The test starts from Dynamo's empty caches and leaves them empty (which frames a compiled test runs eagerly,
    and how many graphs it counts, depend on what was compiled before). Used by the compile tests through
    ``pytest.mark.usefixtures("reset_dynamo")``. The notes of the code compiled frames ran go with them."""
    from pyro_dgm.losses import compiled

    dynamo.reset()
    compiled._FRAMES_CODE.clear()
    yield
    dynamo.reset()
    compiled._FRAMES_CODE.clear()
