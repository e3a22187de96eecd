"""Schemathesis against a running opsgate: requests generated from the app's own OpenAPI
schema, valid and invalid, to every route (Alertmanager webhook, approvals API, health). Not one
may be answered with a server error."""

from __future__ import annotations

import asyncio

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.e2e.rig import WEBHOOK_TOKEN, Rig

AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
# Bounded so the run stays well under a minute on a loaded machine.
EXAMPLES = 150


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_generated_request_gets_a_server_error(rig: Rig) -> None:
    spec = (await rig.client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    base_url = str(rig.client.base_url)
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )

    def fuzz() -> None:
        # requests is blocking: the calls run in this thread while opsgate serves on the loop.
        with requests.Session() as session:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(cases)
            def answered_without_a_server_error(case: Case) -> None:
                response = case.call(base_url=base_url, session=session, headers=AUTH, timeout=10)
                assert response.status_code < 500, (case.as_curl_command(), response.text)

            answered_without_a_server_error()

    await asyncio.to_thread(fuzz)
