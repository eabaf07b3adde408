from __future__ import annotations

import pytest

import nas

#: Spaces at ImageNet/detection resolution: building and running their networks takes
#: seconds, so tests that run models on them are marked slow (the analytic tests are not).
LARGE = {name for name in nas.builtin_spaces() if nas.load_space(name).input_shape[-1] >= 224}


@pytest.fixture(params=nas.builtin_spaces())
def space(request: pytest.FixtureRequest) -> nas.Space:
    """Every built-in space: tests that take it run once per space (timm-style registry tests)."""
    return nas.load_space(request.param)


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in nas.builtin_spaces()])
def runnable_space(request: pytest.FixtureRequest) -> nas.Space:
    """Every built-in space, for tests that build and run its networks (large ones marked slow)."""
    return nas.load_space(request.param)
