"""The digest a signature is over: the exact operation, so a changed proposal is a new one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from opsgate.services.operations import Operation

# The fields of a stored plan that fix what the change will be (undo's target revision, the
# replicas a scale goes to); its narrative parts may be re-rendered without a new signature.
PLAN_FIELDS = ("target_revision", "replicas", "from_replicas", "template_digest")


def operation_digest(op: Operation, plan: dict[str, Any] | None = None) -> str:
    """sha256 over a canonical JSON of kind, target and parameters (and the plan's fixed
    fields when a plan is stored), so equal operations always give equal digests."""
    fields: dict[str, Any] = {"operation": op.to_dict()}
    if plan:
        fixed = {key: plan[key] for key in PLAN_FIELDS if plan.get(key) is not None}
        if fixed:
            fields["plan"] = fixed
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
