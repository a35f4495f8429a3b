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
        per_replica = ["replica", "role"]
        self.replica_waiting = Gauge("hexserve:replica_requests_waiting", "Requests queued at a replica (a prefill "
                                     "replica's: also those awaiting a decode replica)", per_replica, registry=r)
        self.replica_running = Gauge("hexserve:replica_requests_running", "Requests running on a replica",
                                     per_replica, registry=r)
        self.replica_kv_sent = Gauge("hexserve:replica_kv_bytes_sent", "KV bytes a prefill replica handed over",
                                     per_replica, registry=r)
        self.replica_kv_received = Gauge("hexserve:replica_kv_bytes_received", "KV bytes a decode replica took in",
                                         per_replica, registry=r)
        self.replica_kv_seconds = Gauge("hexserve:replica_kv_transfer_seconds", "Seconds a replica's workers spent "
                                        "receiving KV", per_replica, registry=r)
        self.prompt_tokens = Counter("hexserve:prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.generation_tokens = Counter("hexserve:generation_tokens", "Generated tokens", registry=r)
        self.finished = Counter("hexserve:request_success", "Finished requests", ["finished_reason"], registry=r)
        self.ttft = Histogram("hexserve:time_to_first_token_seconds", "Arrival to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("hexserve:time_per_output_token_seconds", "Mean time between output tokens",
                              buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("hexserve:e2e_request_latency_seconds", "Arrival to last token",
                             buckets=LATENCY_BUCKETS, registry=r)

    def set_replicas(self, replicas) -> None:
        """Per-replica gauges from the engine's `stats().replicas`."""
        for rs in replicas:
            labels = {"replica": str(rs.index), "role": rs.role}
            self.replica_waiting.labels(**labels).set(rs.waiting)
            self.replica_running.labels(**labels).set(rs.running)
            self.replica_kv_sent.labels(**labels).set(rs.kv_bytes_sent)
            self.replica_kv_received.labels(**labels).set(rs.kv_bytes_received)
            self.replica_kv_seconds.labels(**labels).set(rs.kv_seconds)
