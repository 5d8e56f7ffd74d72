"""Prometheus metrics, one registry per daemon (no global state), fed from cycle reports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from daemon.cycle import CycleReport, RegistryReport


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram(
            "capsync_cycle_duration_seconds",
            "Duration of a sync cycle",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.cycles = Counter("capsync_cycles", "Sync cycles by result", ["result"], registry=r)
        self.last_success = Gauge(
            "capsync_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            registry=r,
        )
        self.entries = Gauge("capsync_entries", "Desired entries by source", ["source"], registry=r)
        self.invalid = Gauge(
            "capsync_invalid_declarations",
            "Invalid declarations in the last cycle, by source",
            ["source"],
            registry=r,
        )
        self.source_up = Gauge(
            "capsync_source_up", "1 if the source listed in the last cycle", ["source"], registry=r
        )
        self.source_errors = Counter(
            "capsync_source_errors", "Failed listings by source", ["source"], registry=r
        )
        self.operations = Counter(
            "capsync_registry_operations",
            "Registry writes applied, by registry and operation",
            ["registry", "operation"],
            registry=r,
        )
        self.requests = Counter(
            "capsync_registry_write_requests",
            "Write requests (transactions) sent, by registry",
            ["registry"],
            registry=r,
        )
        self.registry_errors = Counter(
            "capsync_registry_errors",
            "Cycles whose registry read or write failed, and entries the registry refused",
            ["registry"],
            registry=r,
        )
        self.unwritten = Counter(
            "capsync_registry_operations_unwritten",
            "Planned operations not written, by registry and why "
            "(refused by the registry, unsent when stopping, "
            "interrupted)",
            ["registry", "reason"],
            registry=r,
        )
        self.held = Gauge(
            "capsync_deletions_held",
            "Deletions held in the last cycle (first-sync gate or the mass-deletion guard)",
            ["registry"],
            registry=r,
        )
        self.conflicts = Gauge(
            "capsync_conflicts", "Worker ids declared twice, last cycle", ["registry"], registry=r
        )
        self.registry_up = Gauge(
            "capsync_registry_up",
            "1 if the registry was read and written in the last cycle",
            ["registry"],
            registry=r,
        )
        self.leader = Gauge("capsync_leader", "1 if this instance may write", registry=r)
        self.retries = Counter(
            "capsync_retries", "Cycles run as a retry after a failed one", registry=r
        )
        self.events = Counter(
            "capsync_source_events", "Change events that requested a sync", registry=r
        )

    def observe(self, report: CycleReport, seconds: float, now: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycles.labels("success" if report.ok else "failure").inc()
        if report.ok:
            self.last_success.set(now)
        # Desired entries are the same for every registry but for the ids another writer
        # holds there; counted from the first registry that could be read.
        desired = next((r.desired for r in report.registries if not r.registry_error), None)
        per_source: dict[str, int] = {}
        for entry in (desired or {}).values():
            per_source[entry.source] = per_source.get(entry.source, 0) + 1
        for source in report.sources:
            self.source_up.labels(source.name).set(1 if source.ok else 0)
            if not source.ok:
                self.source_errors.labels(source.name).inc()
            if desired is not None:
                self.entries.labels(source.name).set(per_source.get(source.name, 0))
            self.invalid.labels(source.name).set(source.invalid)
        for reg in report.registries:
            self._observe_registry(reg)

    def _observe_registry(self, reg: RegistryReport) -> None:
        name = reg.name
        self.registry_up.labels(name).set(0 if reg.registry_error else 1)
        errors = self.registry_errors.labels(name)
        if reg.registry_error:
            errors.inc()
            return
        self.held.labels(name).set(len(reg.changes.held))
        self.conflicts.labels(name).set(len(reg.conflicts))
        if reg.applied:  # never set on a dry run
            done = reg.applied
            self.requests.labels(name).inc(done.requests)
            errors.inc(len(done.refused))
            # What the registry confirmed written, not what was planned.
            for operation, count in done.written.items():
                self.operations.labels(name, operation).inc(count)
            self.unwritten.labels(name, "refused").inc(len(done.refused))
            self.unwritten.labels(name, "unsent").inc(done.unsent)
            self.unwritten.labels(name, "interrupted").inc(done.interrupted)

    def watch_amqp(self, read: Callable[[], dict[str, Any]]) -> None:
        """Expose the RabbitMQ consumers' and publisher's live counters (``/status``'s
        ``amqp`` object, read at each scrape)."""
        self.registry.register(_AmqpCollector(read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _AmqpCollector:
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        view = self.read()
        up = GaugeMetricFamily(
            "capsync_amqp_consumer_up",
            "1 if the amqp source is consuming its queue",
            labels=["source"],
        )
        messages = CounterMetricFamily(
            "capsync_amqp_messages",
            "Messages of the amqp source's queue: consumed "
            "(acknowledged), rejected (to the dead-letter queue), redelivered",
            labels=["source", "result"],
        )
        for name, consumer in view.get("consumers", {}).items():
            up.add_metric([name], 1 if consumer["state"] == "consuming" else 0)
            for result in ("consumed", "rejected", "redelivered"):
                messages.add_metric([name, result], consumer[result])
        yield up
        yield messages
        publisher = view.get("publisher")
        if publisher is not None:
            yield GaugeMetricFamily(
                "capsync_amqp_events_outbox",
                "Change events waiting in the outbox",
                value=publisher["outbox"],
            )
            yield CounterMetricFamily(
                "capsync_amqp_events_published",
                "Change events confirmed by the broker",
                value=publisher["published"],
            )
            yield CounterMetricFamily(
                "capsync_amqp_events_dropped",
                "Change events dropped from a full outbox",
                value=publisher["dropped"],
            )
