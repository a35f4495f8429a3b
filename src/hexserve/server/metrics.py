"""Prometheus metrics, named like vLLM's (`vllm:num_requests_running` -> `hexserve:num_requests_running`),
each app with its own registry so that several apps can live in one process (tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.waiting = Gauge("hexserve:num_requests_waiting", "Requests queued for admission", registry=r)
        self.running = Gauge("hexserve:num_requests_running", "Requests holding KV blocks", registry=r)
        self.blocks_used = Gauge("hexserve:kv_blocks_used", "KV cache blocks in use", registry=r)
        self.blocks_total = Gauge("hexserve:kv_blocks_total", "KV cache blocks in the pool", registry=r)
        self.prompt_tokens = Counter("hexserve:prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.generation_tokens = Counter("hexserve:generation_tokens", "Generated tokens", registry=r)
        self.finished = Counter("hexserve:request_success", "Finished requests", ["finished_reason"], registry=r)
        self.ttft = Histogram("hexserve:time_to_first_token_seconds", "Arrival to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("hexserve:time_per_output_token_seconds", "Mean time between output tokens",
                              buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("hexserve:e2e_request_latency_seconds", "Arrival to last token",
                             buckets=LATENCY_BUCKETS, registry=r)
