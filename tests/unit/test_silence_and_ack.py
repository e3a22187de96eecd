"""Silence and acknowledge, the parts without I/O: the policy permission, the buttons' data,
the card's row of buttons and its lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsgate.bot.render import card_html
from opsgate.bot.response_data import (
    AckAction,
    SilenceAction,
    UnsilenceAction,
    decode,
    encode,
)
from opsgate.bot.response_keyboard import response_row
from opsgate.cli import main
from opsgate.services.chat import SilenceLine
from opsgate.services.policy import AlertPermission, Policy, PolicyError
from tests.builders import ALICE, CAROL, MALLORY, VIEWER, pending_card, policy

AT = datetime(2026, 11, 28, 3, 14, tzinfo=UTC)


def test_silence_and_ack_are_permissions_of_their_own_scoped_by_namespace() -> None:
    p = policy()
    for permission in AlertPermission:
        assert p.may_handle_alert(ALICE, permission, "shop").allowed
        assert not p.may_handle_alert(ALICE, permission, "payments").allowed
        # An incident without a namespace needs a role over every namespace.
        assert not p.may_handle_alert(ALICE, permission, "").allowed
        assert p.may_handle_alert(CAROL, permission, "").allowed
    refused = p.may_handle_alert(VIEWER, AlertPermission.SILENCE, "shop")
    assert not refused.allowed and "do not allow silence in namespace shop" in refused.reason
    stranger = p.may_handle_alert(MALLORY, AlertPermission.ACK, "shop")
    assert not stranger.allowed and str(MALLORY) in stranger.reason


def test_check_policy_takes_the_permission_and_refuses_unknown_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "roles: {oncall: {namespaces: [shop], alerts: [silence, ack]}}\n"
        "users: [{id: 1, name: a, roles: [oncall]}]\n"
    )
    assert Policy.from_file(good).may_handle_alert(1, AlertPermission.ACK, "shop").allowed
    assert main(["check-policy", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "roles: {oncall: {namespaces: [shop], alerts: [mute]}}\nusers: [{id: 1, roles: [oncall]}]\n"
    )
    with pytest.raises(PolicyError, match=r"roles\.oncall\.alerts\.0: Input should be 'silence'"):
        Policy.from_file(bad)


@pytest.mark.parametrize(
    "action",
    [
        SilenceAction("INC-ABCD1234", 1),
        SilenceAction("INC-ABCD1234", 4),
        UnsilenceAction("INC-ABCD1234"),
        AckAction("INC-ABCD1234"),
    ],
)
def test_button_data_round_trips_within_telegram_s_limit(action: object) -> None:
    data = encode(action)  # type: ignore[arg-type]
    assert decode(data) == action and len(data.encode()) <= 64


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "v1:sl:INC-ABCD1234",
        "v1:sl:INC-ABCD1234:x",
        "v1:sl:INC-ABCD1234:²",
        "v1:ak:inc-abcd1234",
        "v1:ak:INC-ABCD1234:1",
        "v2:ak:INC-ABCD1234",
        "v1:us:",
        "v1:sl:INC-ABCD1234:1000",
    ],
)
def test_forged_or_foreign_data_decodes_to_nothing(data: str | None) -> None:
    assert decode(data) is None


def _labels(card: object) -> list[str]:
    return [b.text for b in response_row(card)]  # type: ignore[arg-type]


def test_the_row_follows_the_incident_s_state() -> None:
    card = replace(pending_card(), silenceable=True)
    assert _labels(card) == ["🔕 1 h", "🔕 4 h", "👀 Ack"]
    assert _labels(replace(card, silenceable=False)) == ["👀 Ack"]
    acked = replace(card, acked_by="@alice", acked_at=AT)
    assert _labels(acked) == ["🔕 1 h", "🔕 4 h"]
    silenced = replace(acked, silence=SilenceLine("@alice", AT, active=True))
    assert _labels(silenced) == ["🔔 Expire silence"]
    ended = replace(acked, silence=SilenceLine("@alice", AT, active=False))
    assert _labels(ended) == ["🔕 1 h", "🔕 4 h"]
    # Resolved: nothing to silence or ack, but a silence in place can still be lifted.
    assert _labels(replace(silenced, incident_status="resolved")) == ["🔔 Expire silence"]
    assert _labels(replace(card, incident_status="resolved")) == []


def test_the_card_says_who_is_on_it_and_about_the_silence_escaped() -> None:
    card = replace(pending_card(), acked_by="@a<b>", acked_at=AT)
    html = card_html(replace(card, silence=SilenceLine("@al&ce", AT, active=True)))
    assert "👀 @a&lt;b&gt; is on it (since 03:14 UTC)" in html
    assert "🔕 silenced until 03:14 UTC by @al&amp;ce" in html
    lifted = SilenceLine("@alice", AT, active=False, expired_by="@bob", expired_at=AT)
    assert "expired early by @bob at 03:14 UTC" in card_html(replace(card, silence=lifted))
    ended = SilenceLine("@alice", AT, active=False)
    assert "🔔 silence by @alice ended at 03:14 UTC" in card_html(replace(card, silence=ended))
