"""The card of an agent's proposal shows the agent's own record beside everyone's, with the
numbers worked out by hand; on SQLite and on PostgreSQL."""

from __future__ import annotations

from opsgate.bot.render import card_html
from opsgate.services.cards import build_card
from opsgate.services.job_kinds import LEARN, LearnJob
from opsgate.services.learning import LearningService
from opsgate.services.storage.db import Database
from opsgate.services.storage.models import Incident
from tests.integration.test_learning_and_knowledge import _case
from tests.job_helpers import held_job


async def learn(database: Database, cases: list[tuple[str | None, str]]) -> None:
    learning = LearningService(database)
    for n, (agent, verified) in enumerate(cases):
        approval_id = await _case(database, n, verified=verified, agent=agent)
        for event in ("approved", "executed", "verified"):
            await learning.run_job(
                await held_job(database, LEARN, LearnJob(approval_id=approval_id, event=event))
            )
    # holmes's first restart was the wrong diagnosis after all.
    await learning.run_job(
        await held_job(database, LEARN, LearnJob(approval_id="ap00000000", event="wrong_diagnosis"))
    )


async def record_on_card(database: Database, n: int, agent: str | None) -> tuple[str, str]:
    await _case(database, n, status="pending", executed=None, agent=agent)
    async with database.read() as session:
        incident = await session.get(Incident, f"INC-TEST{n:04d}")
        assert incident is not None
        card = await build_card(session, incident)
    return card.record, card_html(card)


async def test_an_agents_card_shows_its_own_record_beside_everyones(database: Database) -> None:
    await learn(
        database,
        [
            ("holmes", "success"),
            ("holmes", "success"),
            ("holmes", "failed"),
            ("watson", "success"),
            (None, "success"),
        ],
    )
    # Trust starts at 0.5; a verified success gives 0.3 + 0.7 t, a failure 0.7 t, and a
    # wrong diagnosis 0.7 t again.
    # holmes: 0.5 -> 0.65 -> 0.755 -> 0.5285 -> wrong diagnosis 0.36995: "worked 2/3, 0.37".
    # watson: 0.5 -> 0.65: "worked 1/1, 0.65".
    # everyone: 0.5 -> 0.65 -> 0.755 -> 0.5285 -> 0.66995 -> 0.768965
    #   -> wrong diagnosis 0.5382755: "worked 4/5, 0.54".
    record, html = await record_on_card(database, 10, "holmes")
    assert record == "worked 4/5, trust 0.54; agent holmes: worked 2/3, trust 0.37"
    assert f"📈 {record}" in html
    record, _ = await record_on_card(database, 11, "watson")
    assert record == "worked 4/5, trust 0.54; agent watson: worked 1/1, trust 0.65"
    # An agent never seen before has no record of its own yet.
    record, _ = await record_on_card(database, 12, "moriarty")
    assert record == "worked 4/5, trust 0.54; agent moriarty: no record yet"
    # A person's proposal shows only everyone's record.
    record, html = await record_on_card(database, 13, None)
    assert record == "worked 4/5, trust 0.54" and "agent " not in record
