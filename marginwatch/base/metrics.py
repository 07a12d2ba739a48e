"""Every Prometheus metric of marginwatch but the stress scenarios' (``base.stress_metrics``):
the only place their names are written.

Importing this module registers nothing. Each daemon process builds its metrics on its own
``CollectorRegistry`` (``ProducerMetrics``, ``WorkerMetrics``, ``ExecutorMetrics``) and serves
that registry with ``serve_metrics``: every daemon runs Celery's solo pool (one process, tasks
in the main thread), so one registry per process counts every event exactly once and needs no
multiprocess mode. Labels are bounded (status, margin mode, partition, symbol and a few fixed
codes), never an account. See docs/metrics.md for the table of every metric.

The numpy summaries the partition workers export (pools by status, the cross-pool margin
ratio distribution, the liquidation map) are here too, as pure functions of arrays.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from marginwatch.base.health import Health

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Producer.
TICKS_ACCEPTED = "marginwatch_ticks_accepted_total"
TICKS_REJECTED = "marginwatch_ticks_rejected_total"
PRODUCER_LAST_TICK_TIMESTAMP = "marginwatch_producer_last_tick_timestamp_seconds"
REDIS_ERRORS = "marginwatch_redis_errors_total"
BAD_RECORDS = "marginwatch_bad_records_total"
# Partition workers.
TICK_AGE = "marginwatch_tick_age_seconds"
EVALUATION_DURATION = "marginwatch_evaluation_duration_seconds"
EVALUATIONS = "marginwatch_evaluations_total"
POSITIONS_EVALUATED = "marginwatch_positions_evaluated_total"
POOLS = "marginwatch_pools"
CROSS_MARGIN_RATIO = "marginwatch_cross_margin_ratio"
PARTITION_PENDING = "marginwatch_partition_pending_evaluations"
PARTITION_LAST_SEQUENCE = "marginwatch_partition_last_evaluated_tick_sequence"
STALE_SYMBOLS = "marginwatch_stale_symbols"
OLDEST_DUE_LIQUIDATION = "marginwatch_oldest_due_liquidation_age_seconds"
LIQUIDATIONS_DUE = "marginwatch_liquidations_due"
QUEUE_MESSAGES = "marginwatch_queue_messages"
LIQUIDATION_MAP = "marginwatch_liquidation_map_notional_usdt"
ACTIONS_SENT = "marginwatch_actions_sent_total"
BOOK_RELOADS = "marginwatch_book_reloads_total"
# Executor.
MARGIN_CALLS = "marginwatch_margin_calls_total"
MARGIN_CALL_RESOLUTIONS = "marginwatch_margin_call_resolutions_total"
LIQUIDATIONS = "marginwatch_liquidations_total"
LIQUIDATIONS_SKIPPED = "marginwatch_liquidations_skipped_total"
LIQUIDATED_NOTIONAL = "marginwatch_liquidated_notional_usdt_total"
TICK_TO_ACTION_LATENCY = "marginwatch_tick_to_action_latency_seconds"
INSURANCE_FUND = "marginwatch_insurance_fund_usdt"
ACTION_FAILURES = "marginwatch_action_failures_total"
ACTION_RETRIES = "marginwatch_action_retries_total"
WEBHOOK_DELIVERIES = "marginwatch_webhook_deliveries_total"
ACCOUNT_EVENTS = "marginwatch_account_events_total"
OLDEST_WEBHOOK_DELIVERY = "marginwatch_oldest_webhook_delivery_age_seconds"
LIQUIDATION_CAPACITY = "marginwatch_liquidation_capacity_per_second"

# Label values (each a fixed, small set).
# Statuses in the order of the batch path's codes (engine.types.STATUS_ORDER; the producer
# imports this module, which therefore imports nothing of the engine).
STATUSES = ("ok", "warning", "margin_call", "liquidation")
MARGIN_MODES = ("cross", "isolated")
ACTIONS = ("margin_call", "margin_call_resolved", "liquidate")
SKIP_REASONS = ("rescued", "gone", "unavailable")
WEBHOOK_RESULTS = ("delivered", "failed", "retried")
ACCOUNT_EVENT_OUTCOMES = ("accepted", "rejected", "duplicate")
# Records read from Redis that could not be used (skipped, the others read on).
BAD_RECORD_KINDS = ("tick", "account", "action")
# Why a worker read its partitions' books again from Redis (state.identity).
RELOAD_REASONS = ("redis_restarted", "redis_data_lost")

TICK_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EVALUATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MARGIN_RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # and +Inf
MARGIN_RATIO_LE = (*(repr(edge) for edge in MARGIN_RATIO_BUCKETS), "+Inf")  # "0.1" .. "1.0"
# Adverse move from the mark to the liquidation price: [0, 1%), [1%, 2%), ..., [10%, 20%).
LIQUIDATION_BANDS = ("0-1%", "1-2%", "2-5%", "5-10%", "10-20%")
LIQUIDATION_BAND_EDGES = (0.01, 0.02, 0.05, 0.10, 0.20)
# The liquidation capacity's window: the executor's last this many liquidation tasks (batches).
CAPACITY_WINDOW_TASKS = 100


def _redis_errors(registry: CollectorRegistry, component: str) -> Counter:
    """The Redis-errors counter's child for ``component`` (producer, worker or executor)."""
    counter = Counter(
        REDIS_ERRORS,
        "Redis connection and timeout errors met by the component",
        ["component"],
        registry=registry,
    )
    return counter.labels(component)


def _bad_records(registry: CollectorRegistry, component: str) -> Callable[[str], None]:
    """Counts a bad record of a kind (``BAD_RECORD_KINDS``) met by ``component``."""
    counter = Counter(
        BAD_RECORDS,
        "Records read from Redis that could not be used and were skipped, by kind",
        ["component", "kind"],
        registry=registry,
    )
    for kind in BAD_RECORD_KINDS:
        counter.labels(component, kind)
    return lambda kind: counter.labels(component, kind).inc()


class ProducerMetrics:
    """The producer's metrics, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry, reject_reasons: Sequence[str] = ()) -> None:
        """``reject_reasons``: the producer's reason codes, exported at zero from the start so
        that ``rate()`` sees a reason's first reject."""
        self.ticks_accepted = Counter(
            TICKS_ACCEPTED, "Ticks validated and published to Redis", registry=registry
        )
        self.ticks_rejected = _counter(
            registry, TICKS_REJECTED, "Ticks rejected, by reason code", "reason", reject_reasons
        )
        self.last_tick_timestamp = Gauge(
            PRODUCER_LAST_TICK_TIMESTAMP,
            "Event time (Unix seconds) of the newest accepted tick",
            registry=registry,
        )
        self.redis_errors = _redis_errors(registry, "producer")


class WorkerMetrics:
    """A partition worker's metrics, created on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._evaluation_metrics(registry)
        self.pools = Gauge(
            POOLS,
            "Margin pools (cross pools = accounts; isolated positions) by batch status and mode",
            ["partition", "status", "margin_mode"],
            registry=registry,
        )
        self.cross_margin_ratio = CrossMarginRatioCollector()
        registry.register(self.cross_margin_ratio)
        self.liquidation_map = LiquidationMapCollector()
        registry.register(self.liquidation_map)
        self.count_bad_record = _bad_records(registry, "worker")
        self.pending = Gauge(
            PARTITION_PENDING,
            "1 while an evaluation of the partition is queued and not started",
            ["partition"],
            registry=registry,
        )
        self.stale_symbols = Gauge(
            STALE_SYMBOLS,
            "Symbols held by the partition whose newest tick is older than stale_after_seconds",
            ["partition"],
            registry=registry,
        )
        self.actions_sent = Counter(
            ACTIONS_SENT, "Actions sent to the executor, by action", ["action"], registry=registry
        )
        self.oldest_due_liquidation = Gauge(
            OLDEST_DUE_LIQUIDATION,
            "Age of the partition's oldest liquidation sent and not yet executed (0: none)",
            ["partition"],
            registry=registry,
        )
        self.liquidations_due = Gauge(
            LIQUIDATIONS_DUE,
            "Liquidations of the partition sent and not yet executed nor skipped",
            ["partition"],
            registry=registry,
        )
        self.queue_messages = Gauge(
            QUEUE_MESSAGES,
            "Messages waiting in one of the partition's Celery queues (taken ones not counted)",
            ["queue_kind", "partition"],
            registry=registry,
        )
        self.redis_errors = _redis_errors(registry, "worker")
        self.book_reloads = _counter(
            registry, BOOK_RELOADS, "Books read again from Redis, by reason", "reason",
            RELOAD_REASONS,
        )  # fmt: skip

    def _evaluation_metrics(self, registry: CollectorRegistry) -> None:
        self.tick_age = Histogram(
            TICK_AGE,
            "Age of the newest tick, from its event time to the start of the evaluation",
            ["partition"],
            buckets=TICK_AGE_BUCKETS,
            registry=registry,
        )
        self.evaluation_duration = Histogram(
            EVALUATION_DURATION,
            "Duration of one evaluation of a partition",
            ["partition"],
            buckets=EVALUATION_BUCKETS,
            registry=registry,
        )
        self.evaluations = Counter(
            EVALUATIONS, "Evaluations of the partition", ["partition"], registry=registry
        )
        self.positions_evaluated = Counter(
            POSITIONS_EVALUATED, "Positions screened", ["partition"], registry=registry
        )
        self.last_sequence = Gauge(
            PARTITION_LAST_SEQUENCE,
            "Newest tick sequence read by the partition's last evaluation",
            ["partition"],
            registry=registry,
        )

    def start_partitions(self, partitions: Iterable[int]) -> None:
        """Export the partitions' series at zero before their first evaluation."""
        for partition in partitions:
            label = str(partition)
            for metric in (self.evaluations, self.positions_evaluated, self.stale_symbols):
                metric.labels(label)
            self.set_pools(partition, np.zeros((len(MARGIN_MODES), len(STATUSES)), np.int64))
        for action in ACTIONS:
            self.actions_sent.labels(action)

    def set_pools(self, partition: int, counts: IntArray) -> None:
        """Set the pool gauges from ``counts[margin mode][status]`` (see ``pool_counts``)."""
        for m, mode in enumerate(MARGIN_MODES):
            for s, status in enumerate(STATUSES):
                self.pools.labels(str(partition), status, mode).set(int(counts[m, s]))

    def set_pending(self, partitions: Iterable[int], pending: bool) -> None:
        for partition in partitions:
            self.pending.labels(str(partition)).set(1 if pending else 0)


class ExecutorMetrics:
    """The executor's metrics (actions, webhooks, account events), created on ``registry``.

    ``symbols``: the symbols liquidated notional is exported for at zero from the start, so
    ``increase()`` sees a symbol's first liquidation (one series per symbol, bounded)."""

    def __init__(self, registry: CollectorRegistry, symbols: Sequence[str] = ()) -> None:
        self._action_outcomes(registry, symbols)
        self.tick_to_action_latency = Histogram(
            TICK_TO_ACTION_LATENCY,
            "From the triggering tick's event time to the action's event being written",
            ["action"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.insurance_fund = PartitionsReadAtScrape(
            INSURANCE_FUND, "A partition's ledger of the insurance fund (USDT), read at scrape"
        )
        registry.register(self.insurance_fund)
        self.oldest_webhook_delivery = PartitionsReadAtScrape(
            OLDEST_WEBHOOK_DELIVERY,
            "Age of the partition's oldest webhook delivery not yet made nor given up (0: none)",
        )
        registry.register(self.oldest_webhook_delivery)
        self.liquidation_capacity = LiquidationCapacity()
        registry.register(self.liquidation_capacity)
        self.action_failures = _counter(
            registry, ACTION_FAILURES, "Action tasks that failed for good", "action", ACTIONS
        )
        self.action_retries = _counter(
            registry, ACTION_RETRIES, "Action task retries", "action", ACTIONS
        )
        self.webhook_deliveries = _counter(
            registry, WEBHOOK_DELIVERIES, "Webhook delivery attempts", "result", WEBHOOK_RESULTS
        )
        self.account_events = _counter(
            registry,
            ACCOUNT_EVENTS,
            "Account events handled by the applier, by outcome",
            "outcome",
            ACCOUNT_EVENT_OUTCOMES,
        )
        self.redis_errors = _redis_errors(registry, "executor")
        self.count_bad_record = _bad_records(registry, "executor")

    def _action_outcomes(self, registry: CollectorRegistry, symbols: Sequence[str]) -> None:
        self.margin_calls = _counter(
            registry, MARGIN_CALLS, "MARGIN_CALL events emitted", "margin_mode", MARGIN_MODES
        )
        self.margin_call_resolutions = _counter(
            registry,
            MARGIN_CALL_RESOLUTIONS,
            "Margin-call episodes resolved",
            "margin_mode",
            MARGIN_MODES,
        )
        self.liquidations = _counter(
            registry, LIQUIDATIONS, "Pools liquidated", "margin_mode", MARGIN_MODES
        )
        self.liquidations_skipped = _counter(
            registry,
            LIQUIDATIONS_SKIPPED,
            "Liquidation actions skipped on the exact re-check",
            "reason",
            SKIP_REASONS,
        )
        self.liquidated_notional = _counter(
            registry,
            LIQUIDATED_NOTIONAL,
            "Notional closed by liquidations, at mark (USDT)",
            "symbol",
            symbols,
        )


def _counter(
    registry: CollectorRegistry, name: str, documentation: str, label: str, values: Sequence[str]
) -> Counter:
    """A counter with one label, its children for ``values`` exported at zero."""
    counter = Counter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


def serve_metrics(
    registry: CollectorRegistry,
    port: int | None,
    addr: str = "0.0.0.0",
    health: Health | None = None,
) -> WSGIServer | None:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread, and ``health``'s
    ``/healthz`` and ``/readyz`` beside it.

    ``port`` 0 or ``None``: disabled (returns ``None``). Stop with ``server.shutdown()``.
    """
    if not port:
        return None
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    if health is not None:  # before the daemon says where it listens
        server.set_app(health.wsgi(make_wsgi_app(registry)))
    return server


def metrics_url(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/metrics"


def pool_counts(status: npt.NDArray[np.int8], isolated: npt.NDArray[np.bool_]) -> IntArray:
    """Pools by ``[margin mode][status]`` (mode 0 cross, 1 isolated; status codes 0-3)."""
    codes = isolated.astype(np.int64) * len(STATUSES) + status.astype(np.int64)
    counts = np.bincount(codes, minlength=len(MARGIN_MODES) * len(STATUSES))
    return counts.reshape(len(MARGIN_MODES), len(STATUSES))


@dataclass(frozen=True)
class RatioHistogram:
    """Cumulative counts per ``MARGIN_RATIO_LE`` bucket, and the sum of the finite ratios."""

    cumulative: tuple[int, ...]
    total: float


def margin_ratio_histogram(ratio: FloatArray) -> RatioHistogram:
    """Bucket margin ratios (``le`` inclusive); ``nan`` (margin balance <= 0) falls in +Inf
    and is left out of the sum."""
    edges = np.array(MARGIN_RATIO_BUCKETS)
    bucket = np.searchsorted(edges, ratio, side="left")  # nan sorts past every edge
    counts = np.cumsum(np.bincount(bucket, minlength=len(MARGIN_RATIO_LE)))
    finite = ratio[np.isfinite(ratio)]
    return RatioHistogram(tuple(int(c) for c in counts), float(finite.sum()))


def liquidation_band_notional(
    symbol: npt.NDArray[np.int32],
    quantity: FloatArray,
    group_starts: IntArray,
    liquidation_price: FloatArray,
    marks: FloatArray,
) -> FloatArray:
    """Notional at mark of the rows whose liquidation price lies in each adverse-move band.

    Rows are a batch book's (symbol index, signed quantity), with its groups and per-row
    liquidation prices; ``marks`` per symbol index. Returns ``[symbol, band]``. The move is
    ``(mark - LP) / mark`` for a long, ``(LP - mark) / mark`` for a short, at least 0 (a pool
    already past its price is in the first band); a hedged group with legs on both sides uses
    ``abs(LP - mark) / mark``. No price (``nan``) or a move of 20% or more: in no band.
    """
    bands = len(LIQUIDATION_BANDS)
    if symbol.shape[0] == 0:
        return np.zeros((marks.shape[0], bands))
    mark = marks[symbol]
    toward = (mark - liquidation_price) / mark  # > 0: reached by a fall
    move = np.where(
        _two_sided_rows(quantity, group_starts),
        np.abs(toward),
        np.maximum(np.sign(quantity) * toward, 0.0),
    )
    band = np.searchsorted(np.array(LIQUIDATION_BAND_EDGES), move, side="right")
    kept = band < bands
    cell = symbol[kept].astype(np.int64) * bands + band[kept]
    notional = np.abs(quantity[kept]) * mark[kept]
    summed = np.bincount(cell, weights=notional, minlength=marks.shape[0] * bands)
    return summed.astype(np.float64).reshape(marks.shape[0], bands)


def _two_sided_rows(quantity: FloatArray, group_starts: IntArray) -> npt.NDArray[np.bool_]:
    """Per row: whether its group holds both a long and a short leg (hedge mode)."""
    sizes = np.diff(group_starts)
    longs = np.add.reduceat((quantity > 0).astype(np.int64), group_starts[:-1])
    two_sided = (longs > 0) & (longs < sizes)
    return np.repeat(two_sided, sizes)


class CrossMarginRatioCollector(Collector):
    """``marginwatch_cross_margin_ratio``: a gauge histogram per partition, set after each
    evaluation (the current distribution, not a count of observations)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[int, RatioHistogram] = {}

    def update(self, partition: int, ratio: FloatArray) -> None:
        """Replace the partition's distribution with that of ``ratio``."""
        histogram = margin_ratio_histogram(ratio)
        with self._lock:
            self._partitions[partition] = histogram

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            partitions = sorted(self._partitions.items())
        family = self._family()
        for partition, histogram in partitions:
            buckets = list(zip(MARGIN_RATIO_LE, histogram.cumulative, strict=True))
            family.add_metric([str(partition)], buckets, histogram.total)
        return [family]

    @staticmethod
    def _family() -> GaugeHistogramMetricFamily:
        return GaugeHistogramMetricFamily(
            CROSS_MARGIN_RATIO,
            "Current distribution of margin ratios of cross pools holding positions",
            labels=["partition"],
        )


class LiquidationMapCollector(Collector):
    """``marginwatch_liquidation_map_notional_usdt{symbol,band}``: the sum over this process's
    partitions (sum across processes in PromQL: ``sum by (symbol, band)``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[int, dict[str, FloatArray]] = {}

    def update(self, partition: int, by_symbol: Mapping[str, FloatArray]) -> None:
        """Replace the partition's map: per symbol it holds, the notional in each band."""
        with self._lock:
            self._partitions[partition] = dict(by_symbol)

    def totals(self) -> dict[str, FloatArray]:
        """Per symbol, the notional in each band summed over the partitions."""
        with self._lock:
            maps = list(self._partitions.values())
        totals: dict[str, FloatArray] = {}
        for by_symbol in maps:
            for symbol, notional in by_symbol.items():
                totals[symbol] = totals.get(symbol, np.zeros(len(LIQUIDATION_BANDS))) + notional
        return totals

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for symbol, notional in sorted(self.totals().items()):
            for band, value in zip(LIQUIDATION_BANDS, notional, strict=True):
                family.add_metric([symbol, band], float(value))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            LIQUIDATION_MAP,
            "Notional at mark of positions whose liquidation price is within the adverse band",
            labels=["symbol", "band"],
        )


class PartitionsReadAtScrape(Collector):
    """A gauge with one sample per served partition, as ``read`` returns them at each scrape
    (``marginwatch_insurance_fund_usdt``, ``marginwatch_oldest_webhook_delivery_age_seconds``).

    ``read`` returns ``None`` when the values are unknown (no sample is exported): by default,
    and while Redis cannot be read. Two executors may serve the same partitions (fail-over), so
    take ``max by (partition)`` before summing, e.g. the fund is
    ``sum(max by (partition) (marginwatch_insurance_fund_usdt))``.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.read: Callable[[], Mapping[int, float] | None] = lambda: None

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        values = self.read()
        for partition, value in sorted((values or {}).items()):
            family.add_metric([str(partition)], value)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=["partition"])


class LiquidationCapacity(Collector):
    """``marginwatch_liquidation_capacity_per_second``: the liquidations this process could
    execute per second at the cost it measured, the liquidations of its last
    ``CAPACITY_WINDOW_TASKS`` liquidation tasks (batches) divided by the seconds they took.

    The window is a number of tasks, not a span of time: an executor that has been idle since
    keeps exporting what its last tasks cost (its capacity is no lower for having had nothing to
    do); one that has executed none exports no sample, so ``sum()`` adds the known capacities.
    """

    def __init__(self, window: int = CAPACITY_WINDOW_TASKS) -> None:
        self._lock = threading.Lock()
        self._tasks: deque[tuple[int, float]] = deque(maxlen=window)

    def observe(self, liquidations: int, seconds: float) -> None:
        """A liquidation task executed ``liquidations`` in ``seconds``."""
        with self._lock:
            self._tasks.append((liquidations, seconds))

    def tasks(self) -> tuple[tuple[int, float], ...]:
        """The window: (liquidations, seconds) of each task in it, oldest first."""
        with self._lock:
            return tuple(self._tasks)

    def per_second(self) -> float | None:
        """Liquidations per second of the window's busy time; ``None`` before the first task."""
        tasks = self.tasks()
        seconds = sum(seconds for _count, seconds in tasks)
        return sum(count for count, _seconds in tasks) / seconds if seconds > 0 else None

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family, value = self._family(), self.per_second()
        if value is not None:
            family.add_metric([], value)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            LIQUIDATION_CAPACITY,
            "Liquidations per second this executor could execute at its measured cost",
        )
