"""Real Codex sessions through the pooler, with the real CLI: tool loops, compaction, and accounts running out.

The simulated model follows the script in the prompt (`simulator/script.py`): `@exec` runs a command on the
CLI's side, `@patch` applies a patch, `@tokens` reports enough usage to push the CLI into auto-compaction,
`@recall` says what the model remembers. Each test runs over HTTP/SSE and over the websocket.
"""

import os
import subprocess

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import RequestLog
from bench.demo import config_toml
from pooler.client_config import API_KEY_ENV
from proxy.migration import CONTEXT_LOST_NOTICE
from tests.factories import make_account, make_key, make_pool
from tests.support.codex import run_codex, transport_args
from tests.support.rows import key_rows
from tests.test_secrets_at_rest import all_stored_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.codex_cli]
TRANSPORTS = pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
# The CLI compacts before the next turn once a turn reported more than this (see `@tokens`).
COMPACT_LIMIT = "model_auto_compact_token_limit = 50000"
# gpt-5.5 is offered `exec_command` and `apply_patch` (gpt-6.1-sol, the default, gets a code-mode `exec` tool).
MODEL = "gpt-5.5"


class Session:
    """One Codex session, turn after turn (`codex exec`, then `codex exec resume --last`)."""

    def __init__(self, codex_bin, pooler, key, tmp_path, websockets: bool):
        self.codex_bin, self.pooler, self.key, self.websockets = codex_bin, pooler, key, websockets
        self.home, self.work = tmp_path / "home", tmp_path / "work"
        self.turns = 0

    def say(self, prompt: str) -> str:
        result = self.run(prompt)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "usage limit" not in result.stderr.lower() and "error" not in result.stdout.lower()
        return result.stdout

    def run(self, prompt: str) -> subprocess.CompletedProcess:
        result = run_codex(
            self.codex_bin,
            self.pooler.codex_base_url,
            self.key,
            prompt,
            websockets=self.websockets,
            home=self.home,
            cwd=self.work,
            resume_last=self.turns > 0,
            extra_top=f'model = "{MODEL}"\n{COMPACT_LIMIT}',
            sandbox="workspace-write",
        )
        self.turns += 1
        return result


def fill_first_pool(simulator, first_fields: dict | None = None):
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0}, sim_fields=first_fields)
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    return first, second, key_row, key


def turns_of(key_row, count: int) -> list[RequestLog]:
    """The key's model requests (prewarms aside), oldest first, once `count` are written."""
    return key_rows(key_row, count, is_prewarm=False)


def upstream_turns(simulator, account) -> list[dict]:
    return simulator.requests(kind="turn", account_id=account.chatgpt_account_id, status=200)


def assert_transport(simulator, websockets: bool) -> None:
    """The CLI falls back to HTTP silently when upgrades fail: every turn took the transport asked for."""
    transports = {r["transport"] for r in simulator.requests(kind="turn")}
    assert transports == {"websocket" if websockets else "http"}


@TRANSPORTS
def test_a_session_runs_commands_and_applies_a_patch(codex_bin, pooler, simulator, tmp_path, websockets):
    first, _, key_row, key = fill_first_pool(simulator)
    simulator.clear_requests()
    session = Session(codex_bin, pooler, key, tmp_path, websockets)
    out = session.say(
        "@exec echo made-by-shell-$((6*7))\n"
        "@patch\n*** Begin Patch\n*** Add File: notes.txt\n+written by apply_patch\n*** End Patch\n"
        "@say all done"
    )
    assert "all done" in out and "made-by-shell-42" in out  # the shell ran the command, not the model
    assert (session.work / "notes.txt").read_text() == "written by apply_patch\n"
    out = session.say("@exec cat notes.txt\n@say read it back")
    assert "read it back" in out and "written by apply_patch" in out
    rows = turns_of(key_row, 5)  # two tool calls and an answer, then one tool call and an answer
    assert {r.account_id for r in rows} == {first.id} and all(r.outcome == "ok" for r in rows)
    sent = [r["input_types"] for r in upstream_turns(simulator, first)]
    assert any("function_call_output" in types for types in sent)
    assert any("custom_tool_call_output" in types for types in sent)
    assert any("reasoning" in types for types in sent)  # sealed reasoning between the tool calls
    assert_transport(simulator, websockets)


@TRANSPORTS
def test_auto_compaction_in_the_middle_of_a_session(codex_bin, pooler, simulator, tmp_path, websockets):
    first, _, key_row, key = fill_first_pool(simulator)
    simulator.clear_requests()
    session = Session(codex_bin, pooler, key, tmp_path, websockets)
    session.say("@exec echo before-compaction\n@tokens 60000\n@say the plan is ready")
    assert "recall: the plan is ready" in session.say("@recall\n@say after compaction")
    for n in range(3):
        assert f"turn {n} after" in session.say(f"@exec echo turn {n}\n@say turn {n} after")
    triggers = [r for r in upstream_turns(simulator, first) if r["compaction_trigger"]]
    assert len(triggers) == 1
    compactions = RequestLog.objects.filter(api_key=key_row, compaction=True)
    assert compactions.count() == 1 and compactions.get().account_id == first.id
    sent = [r["input_types"] for r in upstream_turns(simulator, first)]
    after = sent[[types[-1] for types in sent].index("compaction_trigger") + 1 :]
    assert len(after) >= 4 and "compaction" in after[0]  # the compacted history travels on
    assert_transport(simulator, websockets)


@TRANSPORTS
def test_an_account_runs_out_in_the_middle_of_a_tool_loop(codex_bin, pooler, simulator, tmp_path, websockets):
    # The first account has one turn left: the one that asks for the command.
    first, second, key_row, key = fill_first_pool(simulator, {"primary_used_percent": 99.0, "percent_per_turn": 1.0})
    simulator.clear_requests()
    session = Session(codex_bin, pooler, key, tmp_path, websockets)
    result = session.run("@exec echo loop-step-one\n@exec echo loop-step-two\n@say loop finished")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "loop finished" in out and "loop-step-one" in out and "loop-step-two" in out
    # The user sees nothing of the move: no error, no retry or reconnect notice, on either stream.
    for shown in (result.stdout.lower(), result.stderr.lower()):
        assert not any(word in shown for word in ("error", "usage limit", "retrying", "reconnecting")), shown[-3000:]
    rows = turns_of(key_row, 3)
    assert rows[0].account_id == first.id
    assert [r.account_id for r in rows[1:]] == [second.id, second.id]
    assert rows[1].migrated_from_id == first.id and rows[1].migration_reason
    assert not any(r.context_lost for r in rows)  # only sealed reasoning stayed behind
    moved = upstream_turns(simulator, second)[0]["input_types"]
    assert "function_call_output" in moved and "reasoning" not in moved
    assert_transport(simulator, websockets)


@TRANSPORTS
def test_a_compacted_session_whose_account_runs_out(codex_bin, pooler, simulator, tmp_path, websockets):
    first, second, key_row, key = fill_first_pool(simulator)
    simulator.clear_requests()
    session = Session(codex_bin, pooler, key, tmp_path, websockets)
    marker = "PROMPT-MARKER-compacted-move"
    session.say(f"@exec echo {marker}\n@tokens 60000\n@say the first answer")
    session.say("@say compacted on the first account")
    assert any(r["compaction_trigger"] for r in upstream_turns(simulator, first))
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)

    out = session.say("@recall\n@say on the second account")
    # The model was told, in place of the compaction it cannot read, and says so to the user.
    assert "recall: nothing" in out and "told: Note from the Codex Pooler gateway" in out
    moved = upstream_turns(simulator, second)[0]["input_types"]
    assert "compaction" not in moved and "message:developer" in moved[moved.index("message:user") :]
    assert "reasoning" not in moved  # no item sealed to the first account reaches the second
    turns = RequestLog.objects.filter(api_key=key_row, is_prewarm=False)
    row = turns.filter(account=second).order_by("created_at", "id").first()
    assert row.migrated_from_id == first.id and row.context_lost

    assert "still going" in session.say("@exec echo still going\n@say still going")
    assert turns.filter(context_lost=True).count() == 1  # lost once, at the move
    refused = simulator.requests(kind="turn", account_id=second.chatgpt_account_id, status=400)
    assert len(refused) <= 1  # the pin knows which items are foreign: later turns strip them before sending
    metrics = httpx.get(f"{pooler.url}/metrics").text
    assert f'pooler_compacted_context_lost_total{{pool="{key_row.pool.name}"}} 1.0' in metrics
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser(f"root-{websockets}", "r@example.com", "pw"))
    board = admin.get("/admin/dashboard/").content.decode()
    assert "Compactions and session moves" in board and second.label in board
    lost = admin.get(f"/admin/accounts/requestlog/?context_lost__exact=1&api_key__id__exact={key_row.id}")
    assert lost.status_code == 200 and "1 request log" in lost.content.decode()
    stored = all_stored_text()
    assert marker not in stored and CONTEXT_LOST_NOTICE not in stored
    assert_transport(simulator, websockets)


@TRANSPORTS
def test_the_demo_config_compacts_on_the_way(codex_bin, pooler, simulator, tmp_path, websockets):
    """The config `make demo` prints, plus a low compaction limit, as a user would try it: the CLI's default
    model, plain turns, one session."""
    pool = make_pool()
    make_account(pool, simulator)
    key_row, key = make_key(pool)
    simulator.clear_requests()
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text("model_auto_compact_token_limit = 3000\n" + config_toml(pooler.codex_base_url))
    env = {**os.environ, "CODEX_HOME": str(home), API_KEY_ENV: key, "NO_COLOR": "1"}
    for n in range(3):
        resume = ["resume", "--last"] if n else []
        command = [codex_bin, "exec", "--skip-git-repo-check", *transport_args(websockets), *resume, f"turn {n}"]
        with open(os.devnull, "rb") as stdin:
            result = subprocess.run(
                command, cwd=work, env=env, stdin=stdin, capture_output=True, text=True, timeout=120
            )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"echo: turn {n}" in result.stdout
    assert simulator.requests(kind="turn", compaction_trigger=True)
    assert RequestLog.objects.filter(api_key=key_row, compaction=True).exists()
    assert_transport(simulator, websockets)


@TRANSPORTS
def test_hold_compacted_keeps_a_compacted_session_waiting(codex_bin, pooler, simulator, tmp_path, websockets):
    pool = make_pool(strategy="fill_first", session_migration="hold_compacted")
    first = make_account(pool, simulator, membership={"priority": 0})
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    compacted = Session(codex_bin, pooler, key, tmp_path / "compacted", websockets)
    compacted.say("@tokens 60000\n@say one")
    compacted.say("@say two")  # compacted first, on the first account
    plain = Session(codex_bin, pooler, key, tmp_path / "plain", websockets)
    plain.say("@say plain one")
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)

    assert "plain two" in plain.say("@say plain two")  # only sealed reasoning is lost: it moves on
    waiting = compacted.run("@say three")
    assert waiting.returncode != 0 and "usage limit" in (waiting.stderr + waiting.stdout).lower()
    assert not RequestLog.objects.filter(api_key=key_row, context_lost=True).exists()
    served = RequestLog.objects.filter(api_key=key_row, is_prewarm=False, status_code=200)
    assert served.filter(account=second).count() == 1


@TRANSPORTS
def test_a_compaction_near_the_limit_is_made_where_the_session_can_stay(
    codex_bin, pooler, simulator, tmp_path, websockets
):
    # The first account reports 85% used with the first answer: past POOLER_COMPACT_ELSEWHERE_PERCENT (80).
    first, second, key_row, key = fill_first_pool(simulator, {"primary_used_percent": 84.0})
    simulator.clear_requests()
    session = Session(codex_bin, pooler, key, tmp_path, websockets)
    session.say("@exec echo kept-in-the-compaction\n@tokens 60000\n@say first answer")
    assert "recall: first answer" in session.say("@recall\n@say second answer")
    assert "third" in session.say("@say third")
    trigger = [r for r in simulator.requests(kind="turn", status=200) if r["compaction_trigger"]]
    assert [r["account_id"] for r in trigger] == [second.chatgpt_account_id]
    compaction = RequestLog.objects.get(api_key=key_row, compaction=True)
    assert compaction.account_id == second.id and compaction.migrated_from_id == first.id
    assert compaction.migration_reason == "compacted_near_limit" and not compaction.context_lost
    later = RequestLog.objects.filter(api_key=key_row, is_prewarm=False, created_at__gt=compaction.created_at)
    assert {r.account_id for r in later} == {second.id}
