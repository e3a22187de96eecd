"""Prometheus metrics, on a registry owned by the app rather than the global default.

Counters whose labels come from a closed set start at zero for every label, so a rate or an
``increase`` works from the first scrape and an alert on them sees a series before the first
event. Names, labels and units are listed in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# People answer within seconds to minutes; an approval window is at most hours.
HUMAN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)
# Work of opsgate itself: sub-second normally, tens of seconds under a 429 or a slow API.
MACHINE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self, *, version: str = "unknown") -> None:
        self.registry = CollectorRegistry()
        self._queue_kinds: set[str] = set()
        r = self.registry
        Info("opsgate_build", "The running opsgate", registry=r).info({"version": version})
        self.alerts_received = Counter(
            "opsgate_alert_payloads_total", "Alertmanager payloads received", registry=r
        )
        self.alert_to_card = Histogram(
            "opsgate_alert_to_card_seconds",
            "From the alert's arrival to its card in the chat",
            buckets=MACHINE_BUCKETS,
            registry=r,
        )
        self.tap_to_answer = Histogram(
            "opsgate_tap_to_answer_seconds",
            "From a button tap reaching opsgate to the answer that stops the spinner",
            buckets=MACHINE_BUCKETS,
            registry=r,
        )
        self.approval_to_execution = Histogram(
            "opsgate_approval_to_execution_seconds",
            "From the approval decision to the first execution attempt",
            ["operation"],
            buckets=MACHINE_BUCKETS,
            registry=r,
        )
        self.execution_seconds = Histogram(
            "opsgate_execution_seconds",
            "From the first attempt to the execution's end, retries included",
            ["operation", "status"],
            buckets=MACHINE_BUCKETS,
            registry=r,
        )
        self.executions = Counter(
            "opsgate_executions_total", "Executions that ended", ["status"], registry=r
        )
        self.approval_decisions = Counter(
            "opsgate_approval_decisions_total",
            "Approvals that closed, by how",
            ["outcome"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "opsgate_approval_decision_seconds",
            "From the card's proposal to the approval's decision",
            ["outcome"],
            buckets=HUMAN_BUCKETS,
            registry=r,
        )
        self.verifications = Counter(
            "opsgate_verifications_total",
            "Post-execution verifications that ended, by outcome",
            ["outcome"],
            registry=r,
        )
        self.cards_refused = Counter(
            "opsgate_cards_refused_total",
            "Alert cards a chat refused for good (they are listed in /status)",
            ["reason"],
            registry=r,
        )
        self.telegram_errors = Counter(
            "opsgate_telegram_errors_total",
            "Bot API calls that failed, 429s and 'message is not modified' excluded",
            ["method", "kind"],
            registry=r,
        )
        self.telegram_rate_limited = Counter(
            "opsgate_telegram_rate_limited_total",
            "Bot API calls answered with 429 Too Many Requests",
            ["method"],
            registry=r,
        )
        self.notify_failures = Counter(
            "opsgate_notify_failures_total",
            "Result deliveries to subscriber chats and notifiers that failed",
            ["destination"],
            registry=r,
        )
        self.jobs_dead = Counter(
            "opsgate_jobs_dead_total",
            "Jobs given up after their last attempt (kept in the jobs table)",
            ["kind"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "opsgate_job_queue_depth", "Jobs waiting or running", ["kind"], registry=r
        )
        self.oldest_job_age = Gauge(
            "opsgate_job_oldest_age_seconds",
            "Age of the oldest job that is due and waiting or running",
            ["kind"],
            registry=r,
        )

    def start_at_zero(
        self,
        *,
        job_kinds: Iterable[str],
        approval_outcomes: Iterable[str],
        verification_outcomes: Iterable[str],
        execution_statuses: Iterable[str],
        card_refusals: Iterable[str],
    ) -> None:
        self._queue_kinds |= set(job_kinds)
        for kind in self._queue_kinds:
            self.jobs_dead.labels(kind=kind)
            self.queue_depth.labels(kind=kind).set(0)
            self.oldest_job_age.labels(kind=kind).set(0)
        for outcome in approval_outcomes:
            self.approval_decisions.labels(outcome=outcome)
        for outcome in verification_outcomes:
            self.verifications.labels(outcome=outcome)
        for status in execution_statuses:
            self.executions.labels(status=status)
        for reason in card_refusals:
            self.cards_refused.labels(reason=reason)

    def telegram_error(self, method: str, kind: str) -> None:
        if kind == "rate_limited":
            self.telegram_rate_limited.labels(method=method).inc()
        else:
            self.telegram_errors.labels(method=method, kind=kind).inc()

    def notify_failed(self, destination: str) -> None:
        self.notify_failures.labels(destination=destination).inc()

    def card_posted(self, seconds: float) -> None:
        self.alert_to_card.observe(max(seconds, 0.0))

    def card_refused(self, reason: str) -> None:
        self.cards_refused.labels(reason=reason).inc()

    def tap_answered(self, seconds: float) -> None:
        self.tap_to_answer.observe(max(seconds, 0.0))

    def approval_decided(self, outcome: str, waited_seconds: float) -> None:
        self.approval_decisions.labels(outcome=outcome).inc()
        self.approval_wait.labels(outcome=outcome).observe(max(waited_seconds, 0.0))

    def execution_started(self, operation: str, waited_seconds: float) -> None:
        self.approval_to_execution.labels(operation=operation).observe(max(waited_seconds, 0.0))

    def execution_finished(self, operation: str, status: str, seconds: float) -> None:
        self.executions.labels(status=status).inc()
        self.execution_seconds.labels(operation=operation, status=status).observe(max(seconds, 0.0))

    def verification_finished(self, outcome: str) -> None:
        self.verifications.labels(outcome=outcome).inc()

    def job_dead(self, kind: str) -> None:
        self.jobs_dead.labels(kind=kind).inc()

    def job_queue(self, depth: Mapping[str, int], oldest: Mapping[str, float]) -> None:
        """Kinds with nothing queued read zero rather than keeping their last value."""
        self._queue_kinds |= set(depth) | set(oldest)
        for kind in self._queue_kinds:
            self.queue_depth.labels(kind=kind).set(depth.get(kind, 0))
            self.oldest_job_age.labels(kind=kind).set(max(oldest.get(kind, 0.0), 0.0))
