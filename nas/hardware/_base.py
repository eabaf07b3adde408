"""The one extension point for devices: :class:`HardwareProfile`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from nas.spec import ArchSpec


class HardwareProfile(ABC):
    """A device's latency model, asked by the search for every candidate it scores.

    Subclass it in a plugin (entry-point group ``nas.hardware``) or ship a profile
    file (see ``hardware/README.md``). The search never knows how a profile gets
    its numbers: from measured look-up tables, a roofline model, or a remote
    device farm.

    - :attr:`name` identifies the profile in experiment files and reports.
    - :attr:`kind` is ``"measured"`` or ``"model-based"``; reports show it.
    - :meth:`latency_ms` is called once per candidate, before any training, so it
      must be cheap and must not run the network.
    - :meth:`provenance` is called when a profile is listed or a report is
      written: where the numbers come from (device, framework, date, method).
    """

    name: str = ""
    kind: str = "model-based"

    @abstractmethod
    def latency_ms(self, arch: ArchSpec) -> float:
        """Predicted latency of one forward pass of ``arch`` on the device, in milliseconds."""

    def provenance(self) -> dict[str, Any]:
        """Where the numbers come from; the default names the class."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r})"
