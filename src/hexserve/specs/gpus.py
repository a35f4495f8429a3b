"""Catalogue of device types: memory, bandwidth, dense fp16 TFLOPS and a default price.

Numbers are the vendors' published figures (datasheets listed in docs/references.md); prices are
on-demand $/GPU-hour in the range public clouds charged in 2024-25, with H100 at $3.69 so that 8xH100
costs HexGen-2's $29.52/h. Every number can be overridden per node in a cluster file. Memory is in GiB: the "80 GB" of
an H100 or A100 is 80 GiB of HBM as nvidia-smi reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hexserve.errors import SpecError


@dataclass(frozen=True)
class DeviceType:
    name: str
    memory_gib: float
    mem_bandwidth_gbps: float  # GB/s (1e9 bytes per second)
    tflops: float  # dense fp16/bf16 tensor TFLOPS, no sparsity
    price_per_hour: float
    is_cpu: bool = False

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    def with_overrides(self, **overrides: float | None) -> DeviceType:
        """A copy with the given numbers replaced; None leaves a number as it is."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given)


def _gpu(name: str, memory_gib: float, bw: float, tflops: float, price: float) -> DeviceType:
    return DeviceType(name, memory_gib, bw, tflops, price)


GPU_TYPES: dict[str, DeviceType] = {
    t.name: t
    for t in [
        _gpu("H200-SXM", 141, 4800, 989, 4.50),
        _gpu("H100-SXM", 80, 3350, 989, 3.69),
        _gpu("A100-80GB", 80, 2039, 312, 1.89),
        _gpu("A100-40GB", 40, 1555, 312, 1.29),
        _gpu("L40", 48, 864, 181, 0.99),
        _gpu("L40S", 48, 864, 362, 1.19),
        _gpu("A6000", 48, 768, 155, 0.79),
        _gpu("A5000", 24, 768, 111, 0.44),
        _gpu("A4000", 16, 448, 77, 0.32),
        _gpu("RTX4090", 24, 1008, 165, 0.69),
        _gpu("L4", 24, 300, 121, 0.43),
        _gpu("A10", 24, 600, 125, 0.60),
        _gpu("T4", 16, 320, 65, 0.35),
        _gpu("V100-32GB", 32, 900, 125, 0.80),
    ]
}

# A CPU "device" (a process with its share of cores and host memory). Memory and bandwidth have no
# sensible default and must come from the cluster file; 0.15 TFLOPS is one core of this project's
# 2-core development machine running fp32 GEMMs (~0.3 TFLOPS on both cores: docs/references.md).
CPU_TYPE = DeviceType("cpu", memory_gib=0.0, mem_bandwidth_gbps=0.0, tflops=0.15, price_per_hour=0.0, is_cpu=True)

_ALIASES: dict[str, str] = {
    "h200": "H200-SXM", "h200sxm": "H200-SXM", "h200141gb": "H200-SXM",
    "h100": "H100-SXM", "h100sxm": "H100-SXM", "h10080gb": "H100-SXM", "h100sxm80gb": "H100-SXM",
    "a100": "A100-80GB", "a10080gb": "A100-80GB", "a100sxm": "A100-80GB", "a100sxm80gb": "A100-80GB",
    "a10040gb": "A100-40GB", "a100sxm40gb": "A100-40GB",
    "l40": "L40", "l40s": "L40S",
    "a6000": "A6000", "rtxa6000": "A6000",
    "a5000": "A5000", "rtxa5000": "A5000",
    "a4000": "A4000", "rtxa4000": "A4000",
    "4090": "RTX4090", "rtx4090": "RTX4090", "geforcertx4090": "RTX4090",
    "l4": "L4", "a10": "A10", "a10g": "A10", "t4": "T4",
    "v100": "V100-32GB", "v10032gb": "V100-32GB",
    "cpu": "cpu",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_type_names() -> list[str]:
    return [*GPU_TYPES, CPU_TYPE.name]


def lookup_device_type(name: str, field: str = "type") -> DeviceType:
    """The catalogue entry for a name or alias (case, dashes and spaces do not matter)."""
    canonical = _ALIASES.get(_key(name)) or next((n for n in GPU_TYPES if _key(n) == _key(name)), None)
    if canonical == CPU_TYPE.name:
        return CPU_TYPE
    if canonical is None:
        raise SpecError(f"{field}: unknown device type {name!r}; known types: {', '.join(known_type_names())}")
    return GPU_TYPES[canonical]
