"""A named-buffer arena bound to a device's capacity: every device buffer is allocated through it.

Each buffer has a category (weights, activations, ...), a region (``sram`` or ``flash``) and a size in
*device* bytes (its element count times the bytes of its device format: an int8 weight is 1 byte even though
the simulator holds it in an int64). Exceeding a region's capacity raises :class:`DeviceMemoryError` listing
what did not fit and the whole breakdown; peaks are tracked per category and region.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DeviceMemoryError

__all__ = ["MemoryArena", "Buffer", "format_bytes"]


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class Buffer:
    name: str
    category: str
    region: str
    device_bytes: int


@dataclass
class MemoryArena:
    """sram_bytes / flash_bytes: capacities (0 flash = no flash: 'flash' requests go to SRAM)."""

    sram_bytes: int
    flash_bytes: int = 0
    live: dict[str, Buffer] = field(default_factory=dict)
    peak_bytes: dict[str, int] = field(default_factory=lambda: {"sram": 0, "flash": 0})
    peak_by_category: dict[str, int] = field(default_factory=dict)

    def used(self, region: str) -> int:
        return sum(b.device_bytes for b in self.live.values() if b.region == region)

    def alloc(self, name: str, shape, dtype, category: str, bytes_per_value: int, region: str = "sram"):
        """A zeroed host array of ``shape``/``dtype`` accounted as ``prod(shape) * bytes_per_value`` device
        bytes in ``region``; raises DeviceMemoryError if it does not fit."""
        if region == "flash" and self.flash_bytes == 0:
            region = "sram"
        count = int(np.prod(shape, dtype=np.int64))
        size = count * int(bytes_per_value)
        capacity = self.sram_bytes if region == "sram" else self.flash_bytes
        if name in self.live:
            raise ValueError(f"buffer {name!r} is already allocated")
        if self.used(region) + size > capacity:
            breakdown = ", ".join(f"{b.name} {format_bytes(b.device_bytes)}" for b in self.live.values()
                                  if b.region == region)
            raise DeviceMemoryError(
                f"does not fit in device {region.upper()}: {name} ({category}) needs {format_bytes(size)} but only "
                f"{format_bytes(capacity - self.used(region))} of {format_bytes(capacity)} is free "
                f"[in use: {breakdown or 'nothing'}]; use a smaller model or batch, or a forward-only rule")
        self.live[name] = Buffer(name, category, region, size)
        self.peak_bytes[region] = max(self.peak_bytes[region], self.used(region))
        by_cat: dict[str, int] = {}
        for b in self.live.values():
            by_cat[b.category] = by_cat.get(b.category, 0) + b.device_bytes
        for cat, value in by_cat.items():
            self.peak_by_category[cat] = max(self.peak_by_category.get(cat, 0), value)
        return np.zeros(shape, dtype=dtype)

    def free(self, name: str) -> None:
        del self.live[name]

    def report(self) -> dict:
        """Peak bytes per region and category, with the capacities (run.json's ``memory``)."""
        return {"peak_bytes": self.peak_bytes["sram"], "capacity_bytes": self.sram_bytes,
                "peak_flash_bytes": self.peak_bytes["flash"], "flash_capacity_bytes": self.flash_bytes,
                "peak_by_category": dict(sorted(self.peak_by_category.items())),
                "buffers": {b.name: {"category": b.category, "region": b.region, "bytes": b.device_bytes}
                            for b in self.live.values()}}
