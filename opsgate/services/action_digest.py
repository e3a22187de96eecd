"""The digest a signature is over: the exact operation and, once its plan was read, the plan's
target facts, so a changed proposal or a changed plan is a new thing to sign."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from opsgate.services.operation_specs import plan_ready, signed_facts
from opsgate.services.operations import Operation


def operation_digest(op: Operation, plan: Mapping[str, Any] | None = None) -> str:
    """sha256 over a canonical JSON of kind, target and parameters and, for a stored plan that
    is ready, the facts that fix what will be applied (operation_specs.SIGNED_FACTS): equal
    operations with equal plans always give equal digests.

    ``plan`` is the approval's stored plan (``Plan.to_dict()``). A plan that is not ready adds
    nothing: there is no target to sign, and the check just before the real call guards it.
    """
    fields: dict[str, Any] = {"operation": op.to_dict()}
    if plan_ready(plan):
        fixed = signed_facts(op, plan.get("facts") or {})
        if fixed:
            fields["plan"] = fixed
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
