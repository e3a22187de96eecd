"""What an agent's stored evidence puts on the card, and what ``/evidence`` shows in full."""

from __future__ import annotations

from typing import Any

from opsgate.services.storage.models import Approval

CARD_FINDINGS = 3


def agent_card_fields(approval: Approval) -> dict[str, Any]:
    """The CardView fields of an agent's proposal; none for other proposals."""
    if not approval.agent:
        return {}
    evidence = approval.evidence or {}
    findings = evidence.get("findings") or {}
    pairs = tuple((str(k), str(v)) for k, v in list(findings.items())[:CARD_FINDINGS])
    return {
        "agent": approval.agent,
        "rationale": str(evidence.get("rationale") or approval.description or ""),
        "findings": pairs,
    }
