"""Prometheus metrics, one registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# Latency buckets from 1 ms to 30 s: covers a cached answer and a deadline alike.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


GATEWAY, WORKER = "gateway", "worker"


class Metrics:
    """Every family, defined per role; a process registers (and so exports) only its
    own roles' families: a gateway (`api`) the gateway's, a `worker` the worker's,
    standalone `serve` both. The others exist, registered nowhere, so code shared by
    the roles may touch them."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        roles: tuple[str, ...] = (GATEWAY, WORKER),
        distributed: bool = True,
    ) -> None:
        """`distributed=False` (standalone `serve`) leaves out the families only Redis
        mode fills (queue in Redis, workers, reclaims, dead letters, bulk queue)."""
        # No `_created` series: a gauge per counter and histogram that dashboards never
        # read. Process-wide in prometheus_client; idempotent.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        self.roles = roles
        gateway = self.registry if GATEWAY in roles else None
        worker = self.registry if WORKER in roles else None
        self._http(gateway)
        self._queue(gateway, gateway if distributed else None)
        self._worker(worker)
        self._held_jobs(worker, worker if distributed else None)

    def _http(self, r: CollectorRegistry | None) -> None:
        """The gateway's requests, decodes, cache and errors."""
        self.requests = Counter(
            "resnet_serve_requests_total",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "resnet_serve_request_duration_seconds",
            "Time from request received to response ready",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "resnet_serve_in_flight_requests", "Requests being handled now", registry=r
        )
        self.decode_seconds = Histogram(
            "resnet_serve_decode_duration_seconds",
            "Decode + resize + crop of one image, in the decode pool",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "resnet_serve_cache_lookups_total",
            "Response cache lookups, by result",
            ["result"],
            registry=r,
        )
        self.errors = Counter(
            "resnet_serve_errors_total",
            "Error responses, by stable error code",
            ["code"],
            registry=r,
        )

    def _queue(self, r: CollectorRegistry | None, rd: CollectorRegistry | None) -> None:
        """The queue as a gateway sees it. In distributed mode every gateway reads the
        same values from Redis: aggregate them with max(), not sum()."""
        self.queue_depth = Gauge(
            "resnet_serve_queue_depth", "Jobs waiting for a batch", ["model"], registry=r
        )
        self.queue_in_flight = Gauge(
            "resnet_serve_queue_in_flight",
            "Jobs taken by a worker and not yet acknowledged",
            ["model"],
            registry=rd,
        )
        self.queue_oldest_age = Gauge(
            "resnet_serve_queue_oldest_age_seconds",
            "Age of the oldest job not yet acknowledged",
            ["model"],
            registry=rd,
        )
        self.dead_letters = Gauge(
            "resnet_serve_dead_letters",
            "Entries in the dead-letter stream",
            ["model"],
            registry=rd,
        )
        self.workers = Gauge(
            "resnet_serve_workers", "Workers with a live heartbeat", ["model"], registry=rd
        )
        self.workers_needed = Gauge(
            "resnet_serve_workers_needed",
            "Workers needed for the arrival rate plus draining the backlog within the "
            "queue latency objective, from measured per-worker throughput",
            ["model"],
            registry=rd,
        )
        self.bulk_queue_depth = Gauge(
            "resnet_serve_bulk_queue_depth",
            "Bulk jobs waiting in arq's queue for a jobs-worker (read from Redis at scrape)",
            registry=rd,
        )

    def _worker(self, r: CollectorRegistry | None) -> None:
        """Batches and engine time, as the process that infers sees them."""
        self.queue_wait_seconds = Histogram(
            "resnet_serve_queue_wait_seconds",
            "Time a job waited between enqueue and the start of its batch's inference",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "resnet_serve_inference_duration_seconds",
            "Engine time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "resnet_serve_batch_size",
            "Images per engine call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def _held_jobs(self, r: CollectorRegistry | None, rd: CollectorRegistry | None) -> None:
        """Jobs not inferred (expired, cancelled), held jobs' leases, and the batch limit."""
        self.expired_jobs = Counter(
            "resnet_serve_expired_jobs_total",
            "Jobs dropped before inference because their deadline had passed",
            ["model"],
            registry=r,
        )
        self.cancelled_jobs = Counter(
            "resnet_serve_cancelled_jobs_total",
            "Jobs skipped before inference because their client had hung up",
            ["model"],
            registry=r,
        )
        self.max_batch = Gauge(
            "resnet_serve_max_batch",
            "Largest batch the engine runs (batch fill ratio = batch size / this)",
            ["model"],
            registry=r,
        )
        self.lost_leases = Counter(
            "resnet_serve_lost_leases_total",
            "Held jobs another worker claimed before this one renewed them (should stay 0)",
            ["model"],
            registry=r,
        )
        self.handed_back_jobs = Counter(
            "resnet_serve_handed_back_jobs_total",
            "Held jobs handed back for immediate reclaim (stopping, engine broken, retries)",
            ["model"],
            registry=r,
        )
        self.reclaimed_jobs = Counter(
            "resnet_serve_reclaimed_jobs_total",
            "Jobs taken over from a worker that held them past the visibility timeout",
            ["model"],
            registry=rd,
        )
        self.dead_lettered = Counter(
            "resnet_serve_dead_lettered_total",
            "Jobs moved to the dead-letter stream",
            ["model"],
            registry=rd,
        )

    def start_model(self, model: str) -> None:
        """Create a model's labelled series at zero, so dashboards and alerts see the
        series (and `rate()` works) before the first event happens."""
        for metric in (
            self.expired_jobs,
            self.cancelled_jobs,
            self.reclaimed_jobs,
            self.dead_lettered,
            self.lost_leases,
            self.handed_back_jobs,
        ):
            metric.labels(model)
