"""Hardware profiles: how fast a candidate runs on a device, without running it.

``get_profile(name)`` resolves, in order: a built-in profile file in
``hardware/`` (``NAME.json`` measured table, ``NAME.yaml`` roofline model), a table
built on this machine by ``nas hardware build`` (in :func:`user_dir`: ``$NAS_HARDWARE``,
else ``~/.local/share/nas/hardware``), a path to a profile file, an installed plugin
(entry-point group ``nas.hardware``).
Plugin autoloading is off when ``NAS_DISABLE_PLUGIN_AUTOLOAD`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from nas.errors import HardwareError
from nas.hardware._base import HardwareProfile
from nas.hardware._dirs import BUILTIN_DIR, USER_ENV, is_builtin, user_dir
from nas.hardware.lut import LutProfile, Prediction
from nas.hardware.roofline import RooflineProfile

__all__ = [
    "BUILTIN_DIR",
    "HardwareProfile",
    "LutProfile",
    "Prediction",
    "ProfileInfo",
    "RooflineProfile",
    "USER_ENV",
    "available_profiles",
    "get_profile",
    "is_builtin",
    "load_profile_file",
    "user_dir",
]

ENTRY_POINT_GROUP = "nas.hardware"
DISABLE_ENV = "NAS_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    kind: str  # measured / model-based
    source: str  # "built-in", or "plugin from DISTRIBUTION VERSION"
    where: str  # file path, or entry point "module:attr"


def load_profile_file(path: str | Path) -> HardwareProfile:
    path = Path(path)
    if path.suffix == ".json":
        return LutProfile.load(path)
    if path.suffix in (".yaml", ".yml"):
        return RooflineProfile.load(path)
    raise HardwareError(f"{path}: a profile file is a measured table (.json) or a roofline model (.yaml).")


def _plugins_enabled(plugins: bool | None) -> bool:
    return plugins if plugins is not None else not os.environ.get(DISABLE_ENV)


def _plugin_entry_points(plugins: bool | None) -> list:  # list[EntryPoint]
    return list(entry_points(group=ENTRY_POINT_GROUP)) if _plugins_enabled(plugins) else []


def _load_plugin(ep) -> HardwareProfile:  # ep: EntryPoint
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "an unknown distribution"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin must not take the command down without saying whose it is
        raise HardwareError(f"hardware plugin {ep.name!r} ({ep.value}, from {dist}) failed to import: {exc}") from None
    if isinstance(obj, type) and issubclass(obj, HardwareProfile):
        obj = obj()
    elif callable(obj) and not isinstance(obj, HardwareProfile):
        obj = obj()
    if isinstance(obj, (str, Path)):
        obj = load_profile_file(obj)
    if not isinstance(obj, HardwareProfile):
        raise HardwareError(f"hardware plugin {ep.name!r} ({ep.value}, from {dist}) must provide a "
                            f"nas.hardware.HardwareProfile (an instance, a subclass, a factory or a profile file "
                            f"path), but gave {type(obj).__name__}.")
    obj.name = obj.name or ep.name
    return obj


def available_profiles(*, plugins: bool | None = None) -> list[ProfileInfo]:
    """Built-in profile files, tables built on this machine and installed plugins, with where each comes from."""
    out = []
    seen = set()
    for folder, source in ((BUILTIN_DIR, "built-in"), (user_dir(), "built here (nas hardware build)")):
        for path in sorted(folder.glob("*")) if folder.is_dir() else ():
            if path.suffix in (".json", ".yaml", ".yml") and path.stem not in seen:
                seen.add(path.stem)
                kind = "measured" if path.suffix == ".json" else "model-based"
                out.append(ProfileInfo(path.stem, kind, source, str(path)))
    for ep in _plugin_entry_points(plugins):
        dist = f"plugin from {ep.dist.name} {ep.dist.version}" if ep.dist else "plugin"
        out.append(ProfileInfo(ep.name, "plugin", dist, ep.value))
    return out


def get_profile(name: str | Path, *, plugins: bool | None = None) -> HardwareProfile:
    """A built-in profile name, the name of a table built here, a profile file path, or an installed plugin's name."""
    for folder in (BUILTIN_DIR, user_dir()):
        for suffix in (".json", ".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if "/" not in str(name) and path.is_file():
                return load_profile_file(path)
    path = Path(name)
    if path.suffix in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise HardwareError(f"profile file {str(path)!r} does not exist.")
        return load_profile_file(path)
    for ep in _plugin_entry_points(plugins):
        if ep.name == str(name):
            return _load_plugin(ep)
    known = [p.name for p in available_profiles(plugins=plugins)]
    hint = "" if _plugins_enabled(plugins) else f" (plugins are disabled: {DISABLE_ENV} is set or --no-plugins)"
    raise HardwareError(f"unknown hardware profile {str(name)!r}; available: {known}{hint} (looked in {BUILTIN_DIR} "
                        f"and {user_dir()}, set by ${USER_ENV}). Give a profile file path, or build one on this "
                        f"machine with `nas hardware build --space SPACE --name {name}`.")
