"""`opsgate demo --scenario NAME --headless`: every scenario plays to its end against the real
serve path, and the transcript shows what a person in the chat would see."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.cli import main
from opsgate.demo.command import headless
from opsgate.demo.scenarios import BY_NAME, SCENARIOS

SPECIFIC = {
    "crashloop": ("@alice taps [✅ Approve]", "Succeeded · ", "Approved by @alice"),
    "latency": ("kubectl scale deployment/search -n shop --replicas=4", "scaled from 2 to 4"),
    "bad-release": ("risk critical", "Approved by @alice, @bob", "rolled back to revision 1"),
    "node": ("kubectl cordon node-b", "node node-b cordoned"),
    "transient": ("attempt 1 failed: 503", "approved by @alice · 2 attempts"),
    "permanent": ("Failed", "not retried"),
    "outside-allowlist": ("Action refused", "@vic"),
    "resolves": ("RESOLVED", "alert resolved before approval"),
    "learned-playbook": ("Playbook #1 is now approved", "card: 📈 playbook #1, worked 1/1"),
}


def test_every_scenario_is_covered() -> None:
    assert set(SPECIFIC) == set(BY_NAME)


@pytest.mark.parametrize("name", [scenario.name for scenario in SCENARIOS])
async def test_scenario_transcript(name: str, tmp_path: Path) -> None:
    transcript = await headless(tmp_path, name)
    for needle in (*BY_NAME[name].expect, *SPECIFIC[name]):
        assert needle in transcript, f"{needle!r} not in the transcript:\n{transcript}"
    oncall = transcript.split("=== SRE on-call / ")[1].split("\n=== ")[0]
    if name in ("outside-allowlist", "resolves"):
        # Nothing was approved, so nothing ran: no result reply, no Approve button left.
        assert "Succeeded" not in transcript and "[✅ Approve]" not in oncall
    if name == "permanent":
        assert "Succeeded" not in transcript


def test_the_command_prints_the_transcript(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    # A real bot's token in the shell must not reach the demo's opsgate.
    env["OPSGATE_TELEGRAM_TOKEN"] = "999:real-token-that-must-not-be-used"
    done = subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "demo", "--scenario", "crashloop", "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "# Crash-looping deployment" in done.stdout
    assert "Succeeded" in done.stdout and "=== Result subscribers" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary database and files are gone


def test_an_unknown_scenario_names_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "nope", "--headless"]) == 2
    err = capsys.readouterr().err
    assert "no scenario 'nope'" in err and "crashloop" in err


def test_serve_never_loads_the_demo_or_the_stand_ins() -> None:
    probe = (
        "import sys, opsgate.cli, opsgate.serve\n"
        "loaded = [m for m in sys.modules if m.startswith(('opsgate.demo', 'opsgate.sandbox'))]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
