"""The real Codex CLI completes turns directly against the simulator, over HTTP/SSE and over websockets."""

import pytest

from tests.support.codex import run_codex

pytestmark = pytest.mark.codex_cli


@pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
def test_codex_cli_turn_and_resume_against_the_simulator(codex_bin, simulator, tmp_path, websockets):
    account = simulator.add_account()
    home, work = tmp_path / "home", tmp_path / "work"

    def codex(prompt: str, resume_last: bool = False):
        result = run_codex(
            codex_bin,
            simulator.codex_base_url,
            account["access_token"],
            prompt,
            websockets=websockets,
            home=home,
            cwd=work,
            resume_last=resume_last,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    assert "echo: hello simulator" in codex("hello simulator").stdout
    assert "echo: and again" in codex("and again", resume_last=True).stdout
    turns = simulator.requests(account_id=account["account_id"], kind="turn")
    assert len(turns) == 2 and all(t["status"] == 200 and t["outcome"] == "completed" for t in turns)
    assert turns[0]["session_id"] and turns[0]["session_id"] == turns[1]["session_id"]
    assert turns[0]["prompt_cache_key"] == turns[0]["session_id"]
    if websockets:
        # The CLI silently falls back to HTTP after failed upgrades: prove no turn took that road.
        assert {t["transport"] for t in turns} == {"websocket"}
        assert simulator.requests(account_id=account["account_id"], transport="http", kind="turn") == []
        assert simulator.requests(account_id=account["account_id"], kind="prewarm")
        assert turns[0]["headers"]["openai-beta"].startswith("responses_websockets=")
    else:
        assert {t["transport"] for t in turns} == {"http"}


def test_codex_cli_shows_the_usage_limit(codex_bin, simulator, tmp_path):
    account = simulator.add_account(primary_used_percent=100)
    result = run_codex(
        codex_bin,
        simulator.codex_base_url,
        account["access_token"],
        "anything",
        websockets=False,
        home=tmp_path / "home",
        cwd=tmp_path / "work",
    )
    assert result.returncode != 0 and "usage limit" in (result.stdout + result.stderr).lower()
