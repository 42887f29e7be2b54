"""The simulated model plays a script: tool calls the CLI runs, a final message quoting their outputs."""

import json

from simulator import script, sealing
from tests.test_simulator import events_of, post_turn, reply, turn_body, user_message, ws_connect, ws_turn

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch"
TWO_STEPS = f"@exec echo hi\n@patch\n{PATCH}\n@say all done\n@tokens 5000"


def developer(text: str) -> dict:
    return {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": text}]}


def assistant(text: str) -> dict:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def tool_output(call: dict, output) -> dict:
    """What the CLI sends back after running a tool call."""
    return {"type": f"{call['type']}_output", "call_id": call["call_id"], "output": output}


def compaction_of(account_id: str, conversation: list) -> dict:
    return {
        "type": "compaction",
        "encrypted_content": sealing.seal(account_id, "compaction", script.compaction_memory(conversation, account_id)),
    }


# --- the language, without a server -----------------------------------------------------------------------------


def test_a_message_without_directives_is_no_script():
    assert script.parse("hello\nsay @exec later") is None
    assert script.parse("@execute this") is None


def test_parse_reads_steps_in_order_and_the_final_message_settings():
    hunk = "*** Begin Patch\n*** Update File: a.py\n@@ def f():\n-    pass\n+    return 1\n*** End Patch"
    parsed = script.parse(f"please\n@exec ls -la\n@patch\n{hunk}\n\n@say  finished \n@tokens 4000\n@recall\n@exec pwd")
    assert parsed.steps == [
        script.ToolStep("exec_command", "ls -la"),
        script.ToolStep("apply_patch", hunk),  # the `@@` hunk header stays, the blank line goes
        script.ToolStep("exec_command", "pwd"),
    ]
    assert (parsed.say, parsed.tokens, parsed.recall) == ("finished", 4000, True)
    assert script.parse("@say hi") == script.Script(say="hi")
    assert script.parse(f"@patch\n{PATCH}").steps == [script.ToolStep("apply_patch", PATCH)]


def test_progress_counts_calls_after_the_last_user_message_and_quotes_outputs():
    call = {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"}
    patch = {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": PATCH}
    earlier = [user_message("@exec old"), call, tool_output(call, "old output")]
    conversation = [
        *earlier,
        user_message(TWO_STEPS),
        call,
        tool_output(call, [{"type": "input_text", "text": "hi\n  there"}]),
        patch,
        tool_output(patch, {"ok": True}),
    ]
    plan = script.of_conversation(conversation)
    assert script.progress(conversation, "acct") == (2, ["hi there", '{"ok": true}'])
    assert script.next_step(plan, conversation[:4], "acct") == plan.steps[0]
    assert script.next_step(plan, conversation[:6], "acct") == plan.steps[1]
    assert script.next_step(plan, conversation, "acct") is None
    assert script.final_text(plan, conversation, "acct") == 'all done\noutput 1: hi there\noutput 2: {"ok": true}'
    assert script.output_text(tool_output(call, "x" * 400 + " \n")) == "x" * 300


def test_a_readable_compaction_remembers_steps_outputs_and_the_last_reply():
    call = {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"}
    before = [
        developer("brief"),
        user_message("hello"),
        assistant("I said  hello\nback"),
        user_message(TWO_STEPS),
        call,
        tool_output(call, "hi"),
    ]
    compaction = compaction_of("acct-a", before)
    assert sealing.unseal(compaction["encrypted_content"], "acct-a") == {
        "summary": "I said hello back",
        "steps": 1,
        "outputs": ["hi"],
    }
    after = [developer("brief"), user_message("hello"), user_message(TWO_STEPS), compaction]
    assert script.progress(after, "acct-a") == (1, ["hi"])
    assert script.progress(after, "acct-b") == (0, [])  # another account cannot read it
    recall = script.parse("@recall")
    moved = [*after, user_message("@recall")]
    assert script.final_text(recall, moved, "acct-a") == "done\nrecall: I said hello back"
    told = [*after, developer("The  earlier\nhistory was lost."), user_message("@recall")]
    assert script.final_text(recall, told, "acct-b") == "done\nrecall: nothing\ntold: The earlier history was lost."


# --- over HTTP --------------------------------------------------------------------------------------------------


def _answer(simulator, account: dict, conversation: list) -> dict:
    """One model response (the completed `response` object) to the whole conversation."""
    response = post_turn(simulator, account, turn_body(input=conversation))
    assert response.status_code == 200, response.text
    return events_of(response.text)[-1]["response"]


def test_a_two_step_script_runs_exec_then_patch_and_quotes_the_outputs(simulator):
    account = simulator.add_account(deltas=3)
    conversation = [developer("brief"), user_message(TWO_STEPS)]
    response = post_turn(simulator, account, turn_body(input=conversation))
    events = events_of(response.text)
    reasoning, call = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"].startswith("gAAAA")
    assert call["type"] == "function_call" and call["name"] == "exec_command" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == {"cmd": "echo hi"} and call["call_id"].startswith("call_")
    arguments = [e for e in events if e["type"].startswith("response.function_call_arguments.")]
    assert "".join(e.get("delta", "") for e in arguments) == arguments[-1]["arguments"] == call["arguments"]
    assert events[-1]["response"]["usage"]["input_tokens"] != 5000  # only the final message reports @tokens
    conversation += [reasoning, call, tool_output(call, "hi\n")]

    events = events_of(post_turn(simulator, account, turn_body(input=conversation)).text)
    reasoning, patch = events[-1]["response"]["output"]
    assert patch == {
        "type": "custom_tool_call",
        "id": patch["id"],
        "call_id": patch["call_id"],
        "name": "apply_patch",
        "input": PATCH,
        "status": "completed",
    }
    assert patch["id"].startswith("ctc_") and patch["call_id"] != call["call_id"]
    patch_events = [e for e in events if e.get("item_id") == patch["id"] or e.get("item", {}).get("id") == patch["id"]]
    assert [e["type"] for e in patch_events] == [
        "response.output_item.added",
        *["response.custom_tool_call_input.delta"] * 3,
        "response.custom_tool_call_input.done",
        "response.output_item.done",
    ]
    assert patch_events[0]["item"]["input"] == "" and patch_events[-2]["input"] == PATCH
    assert "".join(e["delta"] for e in patch_events[1:4]) == PATCH
    assert all(e["output_index"] == 1 for e in patch_events)
    conversation += [reasoning, patch, tool_output(patch, "Success. Updated the following files:\nA hello.txt\n")]

    final = _answer(simulator, account, conversation)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][1]["content"][0]["text"] == (
        "all done\noutput 1: hi\noutput 2: Success. Updated the following files: A hello.txt"
    )
    assert final["usage"]["input_tokens"] == 5000
    assert final["usage"]["total_tokens"] == 5000 + final["usage"]["output_tokens"]
    types = [e["input_types"] for e in simulator.requests(account_id=account["account_id"], kind="turn")]
    assert types[-1] == [
        "message:developer",
        "message:user",
        "reasoning",
        "function_call",
        "function_call_output",
        "reasoning",
        "custom_tool_call",
        "custom_tool_call_output",
    ]


def test_a_compaction_in_the_middle_of_a_script_keeps_every_output(simulator):
    account = simulator.add_account()
    conversation = [developer("brief"), user_message("hello"), assistant("echo: hello"), user_message(TWO_STEPS)]
    call = _answer(simulator, account, conversation)["output"][-1]
    conversation += [call, tool_output(call, "hi")]
    (compaction,) = _answer(simulator, account, [*conversation, {"type": "compaction_trigger"}])["output"]
    # As the CLI rebuilds a compacted history: context and user messages, then the compaction item.
    compacted = [developer("brief"), user_message("hello"), user_message(TWO_STEPS), compaction]
    patch = _answer(simulator, account, compacted)["output"][-1]
    assert patch["type"] == "custom_tool_call"  # step 2: step 1 is remembered by the compaction
    compacted += [patch, tool_output(patch, "patched")]
    final = _answer(simulator, account, compacted)["output"][-1]
    assert final["content"][0]["text"] == "all done\noutput 1: hi\noutput 2: patched"


def test_recall_reads_a_compaction_on_its_account_and_a_moved_session_is_told(simulator):
    first = simulator.add_account()
    second = simulator.add_account(verify_encrypted_content=False)
    history = [developer("brief"), user_message("my name is Ada"), assistant("Nice to meet you, Ada.")]
    (compaction,) = _answer(simulator, first, [*history, {"type": "compaction_trigger"}])["output"]
    later = [developer("brief"), user_message("my name is Ada"), compaction, user_message("@recall\n@say ok")]
    assert _answer(simulator, first, later)["output"][-1]["content"][0]["text"] == (
        "ok\nrecall: Nice to meet you, Ada."
    )
    notice = developer("This session moved to another account; its compacted history was lost.")
    moved = [item for item in later if item is not compaction]
    moved.insert(2, notice)
    assert _answer(simulator, second, moved)["output"][-1]["content"][0]["text"] == (
        "ok\nrecall: nothing\ntold: This session moved to another account; its compacted history was lost."
    )
    # Unverified there, but still unreadable: the memory stays with the account that made it.
    assert "recall: nothing" in _answer(simulator, second, later)["output"][-1]["content"][0]["text"]


# --- over a websocket -------------------------------------------------------------------------------------------


def test_a_chained_websocket_conversation_resolves_its_history(simulator):
    account = simulator.add_account()
    with ws_connect(simulator, account) as ws:
        prewarm = ws_turn(ws, turn_body(input=[developer("brief")], generate=False))[-1]["response"]
        assert prewarm["output"] == []

        def chained(previous: dict, *items) -> dict:
            frame = {**turn_body(), "previous_response_id": previous["id"], "input": list(items)}
            return ws_turn(ws, frame)[-1]["response"]

        first = chained(prewarm, user_message(TWO_STEPS))
        call = first["output"][-1]
        assert call["type"] == "function_call"
        second = chained(first, tool_output(call, "hi"))
        patch = second["output"][-1]
        assert patch["type"] == "custom_tool_call"
        final = chained(second, tool_output(patch, "patched"))
        assert final["output"][-1]["content"][0]["text"] == "all done\noutput 1: hi\noutput 2: patched"
        assert final["usage"]["input_tokens"] == 5000
        (compaction,) = chained(final, {"type": "compaction_trigger"})["output"]
        recalled = ws_turn(ws, turn_body(input=[user_message("x"), compaction, user_message("@recall")]))
        assert reply(recalled) == "done\nrecall: all done output 1: hi output 2: patched"
    turns = simulator.requests(account_id=account["account_id"], transport="websocket")
    assert [(t["kind"], t.get("input_types"), t.get("compaction_trigger")) for t in turns] == [
        ("connect", None, None),
        ("prewarm", ["message:developer"], False),
        ("turn", ["message:user"], False),
        ("turn", ["function_call_output"], False),
        ("turn", ["custom_tool_call_output"], False),
        ("turn", ["compaction_trigger"], True),
        ("turn", ["message:user", "compaction", "message:user"], False),
    ]
