"""The real Codex CLI plays a simulator script end to end: it runs the tool calls, compacts, and recalls."""

import pytest

from tests.support.codex import run_codex

pytestmark = pytest.mark.codex_cli

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from patch\n*** End Patch"
SCRIPT = f"@exec echo hi-from-shell\n@patch\n{PATCH}\n@exec cat hello.txt\n@say all done\n@tokens 5000"


@pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
def test_the_cli_runs_a_script_through_compactions_and_recalls_it(codex_bin, simulator, tmp_path, websockets):
    account = simulator.add_account()
    work = tmp_path / "work"

    def codex(prompt: str, resume_last: bool = False) -> str:
        result = run_codex(
            codex_bin,
            simulator.codex_base_url,
            account["access_token"],
            prompt,
            websockets=websockets,
            home=tmp_path / "home",
            cwd=work,
            resume_last=resume_last,
            # Every response reports more than this, so the CLI compacts between the script's steps.
            extra_top='model = "gpt-5.5"\nmodel_auto_compact_token_limit = 3000',
            sandbox="workspace-write",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    lines = codex(SCRIPT).splitlines()
    assert lines[0] == "all done"
    assert lines[1].startswith("output 1: ") and lines[1].endswith("hi-from-shell")
    assert lines[2].startswith("output 2: ") and "A hello.txt" in lines[2]
    assert lines[3].startswith("output 3: ") and lines[3].endswith("hello from patch")
    assert (work / "hello.txt").read_text() == "hello from patch\n"
    turns = simulator.requests(account_id=account["account_id"], kind="turn")
    assert sum(t["compaction_trigger"] for t in turns) >= 3 and all(t["status"] == 200 for t in turns)
    assert {t["transport"] for t in turns} == {"websocket" if websockets else "http"}
    assert simulator.requests(account_id=account["account_id"], kind="compact") == []

    # The final message reported 5000 tokens: the next turn starts with a compaction that remembers it.
    assert "recall: all done output 1: " in codex("@recall\n@say recalled", resume_last=True)
