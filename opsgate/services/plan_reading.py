"""Reading a plan from the cluster: the target's facts and the server-side dry run, with every
way that can fail turned into a plan state (operation_specs.PlanState).

Both the plan job (when an action is proposed) and the execution (when no plan could be read
before it was approved) read plans, so the one reading of the cluster's answers lives here.
"""

from __future__ import annotations

from typing import Any, Protocol

from opsgate.services.failures import classify
from opsgate.services.kube_executor import StageFailed, UndoImpossible
from opsgate.services.operation_specs import Plan, PlanState, make_plan
from opsgate.services.operations import Operation


class Surveyor(Protocol):
    async def survey(self, op: Operation, *, dry_run: bool) -> dict[str, Any]: ...


async def read_plan(cluster: Surveyor, op: Operation, *, dry_run: bool) -> Plan:
    """The plan as the cluster shows it now; a refusal or an unreachable cluster is a plan too."""
    try:
        facts = await cluster.survey(op, dry_run=dry_run)
    except Exception as exc:
        return plan_of_error(op, exc)
    return make_plan(op, facts)


def plan_of_error(op: Operation, exc: Exception) -> Plan:
    """What a survey's exception says of the plan: refused (the target is missing, the dry run
    rejected, nothing to undo to) or unavailable (the cluster could not answer for now)."""
    if isinstance(exc, UndoImpossible):
        return Plan(PlanState.REFUSED, str(exc))
    if isinstance(exc, StageFailed):
        failure = classify(exc.cause)
        if failure.transient:
            return Plan(PlanState.UNAVAILABLE, f"the dry run could not be sent: {failure.short()}")
        return Plan(PlanState.REFUSED, f"the API server refused the dry run: {failure.short()}")
    failure = classify(exc)
    if failure.http_status == 404:
        return Plan(PlanState.REFUSED, f"{op.target()} does not exist")
    if failure.transient:
        return Plan(PlanState.UNAVAILABLE, f"the target could not be read: {failure.short()}")
    return Plan(PlanState.REFUSED, f"the target could not be read: {failure.short()}")
