from __future__ import annotations

import pytest

import nas


@pytest.fixture(params=nas.builtin_spaces())
def space(request: pytest.FixtureRequest) -> nas.Space:
    """Every built-in space: tests that take it run once per space (timm-style registry tests)."""
    return nas.load_space(request.param)
