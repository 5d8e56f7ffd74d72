"""Prometheus metrics, one registry per daemon (no global state), fed from cycle reports,
the front ends' registration calls, and live counters read at scrape time.

Names follow Prometheus's conventions (base units, ``_total`` counters, ``_seconds``);
the alert rules and the dashboard shipped in ``config/monitoring/`` query exactly these.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from daemon.cycle_report import CycleReport, RegistryReport
from daemon.events import EventBus, after_apply, health_counts
from discovery.codec import Entry
from discovery.sources.inbox import InboxStats

# Seconds: a steady cycle is sub-second, a cold one against a large fleet minutes.
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PUSH_OUTCOMES = ("ok", "invalid", "unavailable", "not_found", "error")
PUSH_OPERATIONS = ("register", "unregister")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("capsync_build", "capsync's version and Python", registry=r).info(
            {"version": _version(), "python_version": platform.python_version()}
        )
        self.ready = Gauge(
            "capsync_ready", "1 if the last cycle succeeded (what /readyz answers)", registry=r
        )
        self.cycle_seconds = Histogram(
            "capsync_cycle_duration_seconds",
            "Duration of a sync cycle",
            registry=r,
            buckets=CYCLE_BUCKETS,
        )
        self.cycles = Counter("capsync_cycles", "Sync cycles by result", ["result"], registry=r)
        self.failing = Gauge(
            "capsync_consecutive_failed_cycles",
            "Failed cycles in a row (0 after a successful one)",
            registry=r,
        )
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
        self.listing_seconds = Histogram(
            "capsync_source_listing_duration_seconds",
            "Duration of a source's listing, failed or not",
            ["source"],
            registry=r,
            buckets=CYCLE_BUCKETS,
        )
        self.source_success = Gauge(
            "capsync_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful listing",
            ["source"],
            registry=r,
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
        self.apply_seconds = Histogram(
            "capsync_registry_apply_duration_seconds",
            "Duration of a registry's apply (cycles with writes only)",
            ["registry"],
            registry=r,
            buckets=CYCLE_BUCKETS,
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
        self.registry_entries = Gauge(
            "capsync_registry_entries",
            "capsync's entries in the registry after the last cycle, by source",
            ["registry", "source"],
            registry=r,
        )
        self.health = Gauge(
            "capsync_registry_health",
            "capsync's entries in the registry after the last cycle, by health status "
            "(registries that keep health)",
            ["registry", "status"],
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
        self.claim_elsewhere = Gauge(
            "capsync_registry_claim_held_elsewhere",
            "1 if another writer (host) holds the registry's writer claim: nothing is written",
            ["registry"],
            registry=r,
        )
        self.leader = Gauge("capsync_leader", "1 if this instance may write", registry=r)
        self.retries = Counter(
            "capsync_retries", "Cycles run as a retry after a failed one", registry=r
        )
        self.push_calls = Counter(
            "capsync_push_requests",
            "Registration calls of the front ends (rest, websocket, grpc, amqp) by outcome",
            ["frontend", "operation", "outcome"],
            registry=r,
        )
        self.push_seconds = Histogram(
            "capsync_push_request_duration_seconds",
            "Duration of a registration call: validation and the durable inbox write "
            "(amqp: from the message's receipt to its acknowledgement)",
            ["frontend", "operation"],
            registry=r,
        )
        self._registry_sources: dict[str, set[str]] = {}
        self._front_ends: set[str] = set()

    def observe(self, report: CycleReport, seconds: float, now: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycles.labels("success" if report.ok else "failure").inc()
        self.ready.set(1 if report.ok else 0)
        if report.ok:
            self.last_success.set(now)
            self.failing.set(0)
        else:
            self.failing.inc()
        # Desired entries are the same for every registry but for the ids another writer
        # holds there; counted from the first registry that could be read.
        desired = next((r.desired for r in report.registries if not r.registry_error), None)
        per_source = _per_source((desired or {}).values())
        for source in report.sources:
            self.source_up.labels(source.name).set(1 if source.ok else 0)
            self.listing_seconds.labels(source.name).observe(source.seconds)
            if source.ok:
                self.source_success.labels(source.name).set(now)
            else:
                self.source_errors.labels(source.name).inc()
            if desired is not None:
                self.entries.labels(source.name).set(per_source.get(source.name, 0))
            self.invalid.labels(source.name).set(source.invalid)
        for reg in report.registries:
            self._observe_registry(reg)

    def _observe_registry(self, reg: RegistryReport) -> None:
        name = reg.name
        self.registry_up.labels(name).set(0 if reg.registry_error else 1)
        self.claim_elsewhere.labels(name).set(1 if reg.claim_held_elsewhere else 0)
        errors = self.registry_errors.labels(name)
        if reg.registry_error:
            errors.inc()
            return
        self.held.labels(name).set(len(reg.changes.held))
        self.conflicts.labels(name).set(len(reg.conflicts))
        self._registry_entries(name, _per_source(after_apply(reg).values()))
        for status, count in (health_counts(reg) or {}).items():
            self.health.labels(name, status).set(count)
        if reg.apply_seconds is not None:
            self.apply_seconds.labels(name).observe(reg.apply_seconds)
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

    def _registry_entries(self, registry: str, per_source: Mapping[str, int]) -> None:
        """Set each source's count; a source that no longer has entries there reads 0."""
        seen = self._registry_sources.setdefault(registry, set())
        seen |= per_source.keys()
        for source in seen:
            self.registry_entries.labels(registry, source).set(per_source.get(source, 0))

    def observe_registration(
        self, frontend: str, operation: str, outcome: str, seconds: float
    ) -> None:
        """One registration call of a front end (``RegistrationContext.observe``). A front
        end's every outcome is exported from its first call on, so error rates read 0,
        not nothing."""
        if frontend not in self._front_ends:
            self._front_ends.add(frontend)
            for op in PUSH_OPERATIONS:
                self.push_seconds.labels(frontend, op)
                for result in PUSH_OUTCOMES:
                    self.push_calls.labels(frontend, op, result)
        self.push_calls.labels(frontend, operation, outcome).inc()
        self.push_seconds.labels(frontend, operation).observe(seconds)

    def watch(
        self,
        *,
        amqp: Callable[[], dict[str, Any]],
        inboxes: Callable[[], Mapping[str, InboxStats]],
        bus: EventBus,
    ) -> None:
        """Expose what counts live, read at each scrape: the RabbitMQ consumers and
        publisher (``/status``'s ``amqp`` object), the inboxes and the event bus."""
        self.registry.register(_AmqpCollector(amqp))
        self.registry.register(_LiveCollector(inboxes, bus))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _version() -> str:
    try:
        return metadata.version("capsync")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def _per_source(entries: Iterable[Entry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.source] = counts.get(entry.source, 0) + 1
    return counts


class _LiveCollector:
    def __init__(self, inboxes: Callable[[], Mapping[str, InboxStats]], bus: EventBus) -> None:
        self.inboxes = inboxes
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        registrations = GaugeMetricFamily(
            "capsync_inbox_registrations",
            "Registrations in an inbox (push, amqp) at its last listing, live or expired",
            labels=["source", "state"],
        )
        expiries = CounterMetricFamily(
            "capsync_lease_expiries",
            "Registrations whose lease (ttl, or a closed connection's grace) ran out",
            labels=["source"],
        )
        for name, stats in self.inboxes().items():
            registrations.add_metric([name, "live"], stats.live)
            registrations.add_metric([name, "expired"], stats.expired)
            expiries.add_metric([name], stats.lease_expiries)
        yield registrations
        yield expiries
        yield GaugeMetricFamily(
            "capsync_event_subscribers",
            "Watchers of the change events (WebSocket, gRPC, the AMQP publisher)",
            value=self.bus.subscribers,
        )
        yield CounterMetricFamily(
            "capsync_event_subscribers_dropped",
            "Watchers dropped because they fell behind or went away",
            value=self.bus.dropped,
        )


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
