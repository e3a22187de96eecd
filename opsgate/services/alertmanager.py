"""The Alertmanager webhook payload (version 4), as the contract opsgate accepts."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from opsgate.services.input_bounds import check_storable

ACTION_ANNOTATION = "opsgate_action"
RISK_ANNOTATION = "opsgate_risk"


class AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime | None = None
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _zero_is_unset(cls, value: datetime | None) -> datetime | None:
        # Alertmanager writes 0001-01-01T00:00:00Z for "not set".
        if value is not None and value.year <= 1:
            return None
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("timestamp is out of range") from None
        return value

    def key(self) -> str:
        """Alertmanager's fingerprint, or a stable hash of the labels when it is absent."""
        if self.fingerprint:
            return self.fingerprint[:64]
        canon = json.dumps(self.labels, sort_keys=True).encode()
        return hashlib.sha256(canon).hexdigest()[:16]


class AmPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=4096)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AmAlert] = Field(min_length=1, max_length=1000)
    truncatedAlerts: int = 0

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable(data)
        return data
