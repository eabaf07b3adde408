"""A conformance check for hardware-profile authors (plugins included).

Run it in your plugin's tests::

    from nas.hardware.testing import check_profile
    def test_my_profile():
        check_profile(MyBoardProfile())
"""

from __future__ import annotations

import math

from nas.hardware._base import HardwareProfile
from nas.space import load_space


def check_profile(profile: HardwareProfile, spaces: tuple[str, ...] = ("mobilenetv2-tiny", "mobilenetv2"),
                  samples: int = 10, scaling: bool = True) -> None:
    """Assert what the search relies on: a name, a kind, provenance, and finite positive,
    deterministic latencies; with ``scaling``, a network on a quarter of the pixels must
    not be slower (measured tables only cover the resolutions they were built for: pass
    ``scaling=False`` and the spaces they cover)."""
    assert isinstance(profile, HardwareProfile), f"{profile!r} is not a nas.hardware.HardwareProfile"
    assert isinstance(profile.name, str) and profile.name, "profile.name must be a non-empty string"
    assert profile.kind in ("measured", "model-based"), f"profile.kind must be measured/model-based, got {profile.kind!r}"
    assert isinstance(profile.provenance(), dict), "provenance() must return a dict"
    for name in spaces:
        space = load_space(name)
        for seed in range(samples):
            arch = space.random(seed).arch
            ms = profile.latency_ms(arch)
            assert isinstance(ms, float) and math.isfinite(ms) and ms > 0, f"{name} seed {seed}: latency {ms!r}"
            assert profile.latency_ms(arch) == ms, f"{name} seed {seed}: latency is not deterministic"
        if not scaling:
            continue
        small = space.with_input(space.input_shape[:1] + (space.input_shape[1] // 2,) * 2, space.config.num_classes)
        arch, arch_small = space.random(0).arch, small.random(0).arch
        assert profile.latency_ms(arch_small) <= profile.latency_ms(arch), \
            f"{name}: a quarter of the pixels must not be slower"
