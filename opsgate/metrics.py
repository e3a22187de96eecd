"""Prometheus metrics, on a registry owned by the app rather than the global default."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts_received = Counter(
            "opsgate_alert_payloads_total", "Alertmanager payloads received", registry=self.registry
        )
        self.executions = Counter(
            "opsgate_executions_total", "Executions that ended", ["status"], registry=self.registry
        )
        self.telegram_errors = Counter(
            "opsgate_telegram_errors_total",
            "Telegram calls that failed",
            ["method", "kind"],
            registry=self.registry,
        )
        self.notify_failures = Counter(
            "opsgate_notify_failures_total",
            "Result deliveries to subscriber chats and notifiers that failed",
            ["destination"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "opsgate_job_queue_depth", "Jobs waiting or running", registry=self.registry
        )

    def telegram_error(self, method: str, kind: str) -> None:
        self.telegram_errors.labels(method=method, kind=kind).inc()

    def notify_failed(self, destination: str) -> None:
        self.notify_failures.labels(destination=destination).inc()

    def execution_finished(self, status: str) -> None:
        self.executions.labels(status=status).inc()
