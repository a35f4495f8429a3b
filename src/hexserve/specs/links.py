"""Links between devices: a bandwidth and a latency, named kinds with published defaults."""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.errors import SpecError


@dataclass(frozen=True)
class Link:
    bandwidth_gbps: float  # GB/s per direction (1e9 bytes per second)
    latency_us: float
    kind: str = "custom"

    @property
    def bandwidth(self) -> float:
        """Bytes per second."""
        return self.bandwidth_gbps * 1e9

    @property
    def latency(self) -> float:
        """Seconds."""
        return self.latency_us * 1e-6


# Per-direction peak bandwidths and typical latencies (sources: docs/references.md). What a transfer
# achieves of the peak is an efficiency factor of the cost model's calibration, not of the link.
LINK_KINDS: dict[str, Link] = {
    "nvlink4": Link(450, 3, "nvlink4"),
    "nvlink3": Link(300, 3, "nvlink3"),
    "pcie5": Link(64, 8, "pcie5"),
    "pcie4": Link(32, 8, "pcie4"),
    "pcie3": Link(16, 8, "pcie3"),
    "ib-ndr": Link(50, 3, "ib-ndr"),
    "ib-hdr": Link(25, 3, "ib-hdr"),
    "eth-100g": Link(12.5, 30, "eth-100g"),
    "eth-25g": Link(3.125, 30, "eth-25g"),
    "eth-10g": Link(1.25, 40, "eth-10g"),
    "wan": Link(1.25, 20_000, "wan"),
    # Processes on one host exchanging tensors through shared memory (gloo on loopback).
    "shm": Link(10, 20, "shm"),
}


def lookup_link_kind(kind: str, field: str) -> Link:
    link = LINK_KINDS.get(kind.lower())
    if link is None:
        raise SpecError(f"{field}: unknown link kind {kind!r}; known kinds: {', '.join(LINK_KINDS)}")
    return link
