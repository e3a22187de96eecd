"""The metrics' own rules: 429s apart from errors, queue gauges that fall back to zero."""

from opsgate.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_429s_are_counted_apart_from_errors() -> None:
    metrics = Metrics()
    metrics.telegram_error("sendMessage", "rate_limited")
    metrics.telegram_error("sendMessage", "rate_limited")
    metrics.telegram_error("editMessageText", "rejected")
    assert sample(metrics, "opsgate_telegram_rate_limited_total", method="sendMessage") == 2
    assert (
        sample(metrics, "opsgate_telegram_errors_total", method="sendMessage", kind="rate_limited")
        is None
    )
    assert (
        sample(metrics, "opsgate_telegram_errors_total", method="editMessageText", kind="rejected")
        == 1
    )


def test_a_kind_whose_queue_emptied_reads_zero() -> None:
    metrics = Metrics()
    metrics.job_queue({"sync_card": 3, "execute": 1}, {"sync_card": 12.5})
    assert sample(metrics, "opsgate_job_queue_depth", kind="sync_card") == 3
    assert sample(metrics, "opsgate_job_oldest_age_seconds", kind="sync_card") == 12.5
    assert sample(metrics, "opsgate_job_oldest_age_seconds", kind="execute") == 0
    metrics.job_queue({}, {})
    assert sample(metrics, "opsgate_job_queue_depth", kind="sync_card") == 0
    assert sample(metrics, "opsgate_job_queue_depth", kind="execute") == 0
    assert sample(metrics, "opsgate_job_oldest_age_seconds", kind="sync_card") == 0


def test_build_info_names_the_version() -> None:
    assert sample(Metrics(version="1.2.3"), "opsgate_build_info", version="1.2.3") == 1
