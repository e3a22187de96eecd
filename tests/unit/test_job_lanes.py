import pytest

from opsgate.services.job_kinds import JobKind
from opsgate.services.job_lanes import JOB_LANES, OUTSIDE_LANES, lanes


def test_every_kind_has_exactly_one_place() -> None:
    placed = [kind for kinds in JOB_LANES.values() for kind in kinds] + sorted(OUTSIDE_LANES)
    assert sorted(placed) == sorted(JobKind)


def test_a_handler_of_no_lane_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="job kinds in no lane: telegram_update"):
        lanes({JobKind.EXECUTE: "run", JobKind.TELEGRAM_UPDATE: "inbox"})
    assert lanes({JobKind.EXECUTE: "run", JobKind.SYNC_CARD: "card"}) == {
        "actions": {JobKind.EXECUTE: "run"},
        "chat": {JobKind.SYNC_CARD: "card"},
    }


def lane_of(kind: JobKind) -> str:
    return next(lane for lane, kinds in JOB_LANES.items() if kind in kinds)


def test_what_people_wait_for_in_a_storm_never_queues_behind_its_card_jobs() -> None:
    # A storm queues a card job per incident; the digest (every incident whose card waits)
    # and the results of approvals must not wait for workers behind them.
    storm = lane_of(JobKind.SYNC_CARD)
    assert lane_of(JobKind.DIGEST) != storm
    assert lane_of(JobKind.PUBLISH_RESULT) != storm
    assert lane_of(JobKind.EXECUTE) != storm
