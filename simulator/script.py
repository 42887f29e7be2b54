"""The script language: a user message that makes the simulated model play a working agent.

A user message is a script when one of its lines starts with a directive (the first word of the line):

    @exec <shell command>   a tool step: a `function_call` named `exec_command`, arguments {"cmd": "<command>"}
    @patch                  a tool step: a `custom_tool_call` named `apply_patch` whose `input` is the lines
    *** Begin Patch         below it, up to the next line starting with `@` (`@@` hunk headers stay in the
    ...                     patch) or the end, joined with "\\n" (trailing blank lines dropped)
    *** End Patch
    @say <text>             the final message's first line (default "done"; the last @say wins)
    @tokens <n>             the response carrying the final message reports `usage.input_tokens` = n
    @recall                 the final message adds `recall: <summary>` (the summary held by the last compaction
                            item of the input this account can read) or `recall: nothing`, and, when developer
                            messages follow the first user message, `told: <the last one>` (300 chars)

Other lines are ignored. The script is the LAST user message of the conversation (on a websocket: resolved
through `previous_response_id`). Each model response performs one tool step, in order: the k-th step when
k steps are done, counting the tool calls after that user message. A compaction item (readable by this
account) after it remembers the steps and outputs before it, so counting starts over from its memory.
Once every step is done the model sends the final message:

    <say text>
    output 1: <output of the first tool call>
    output 2: ...
    recall: ... / told: ...           (with @recall)

Each output is the CLI's `function_call_output`/`custom_tool_call_output` `output` (a string; the texts of
a list of content parts; else its JSON), whitespace collapsed and cut to 300 characters, so a test sees
on the CLI's stdout that the commands really ran.
"""

import json
from dataclasses import dataclass, field

from . import sealing

DIRECTIVES = ("@exec", "@patch", "@say", "@tokens", "@recall")
TOOL_CALLS = ("function_call", "custom_tool_call")
TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")
OUTPUT_CHARS = 300
SUMMARY_CHARS = 200


@dataclass
class ToolStep:
    tool: str  # "exec_command" (a function) or "apply_patch" (a custom tool)
    text: str  # the shell command, or the patch


@dataclass
class Script:
    steps: list[ToolStep] = field(default_factory=list)
    say: str = "done"
    tokens: int | None = None
    recall: bool = False


def _directive(line: str) -> tuple[str, str]:
    """The directive a line starts with (at its very start) and the rest of the line, else ("", line)."""
    parts = line.split(None, 1) if line.startswith("@") else []
    if not parts or parts[0] not in DIRECTIVES:
        return "", line
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def parse(text: str) -> Script | None:
    """The script in a user message's text, or None when it has no directive (the model then echoes)."""
    lines = text.splitlines()
    if not any(_directive(line)[0] for line in lines):
        return None
    script = Script()
    patch: list[str] | None = None  # the lines of the patch being read
    for line in lines:
        if patch is not None:
            # `@@` starts a hunk in the patch format: only other `@` lines end a patch.
            if not line.startswith("@") or line.startswith("@@"):
                patch.append(line)
                continue
            script.steps.append(ToolStep("apply_patch", "\n".join(patch).rstrip("\n")))
            patch = None
        word, rest = _directive(line)
        if word == "@exec":
            script.steps.append(ToolStep("exec_command", rest))
        elif word == "@patch":
            patch = []
        elif word == "@say":
            script.say = rest
        elif word == "@tokens" and rest.isdigit():
            script.tokens = int(rest)
        elif word == "@recall":
            script.recall = True
    if patch is not None:
        script.steps.append(ToolStep("apply_patch", "\n".join(patch).rstrip("\n")))
    return script


# --- reading a conversation ------------------------------------------------------------------------------------


def items_of(input_) -> list:
    """A request's `input` as a list of items (a bare string is one user message)."""
    if isinstance(input_, str):
        return [{"type": "message", "role": "user", "content": input_}]
    return [item for item in input_ if isinstance(item, dict)] if isinstance(input_, list) else []


def _collapse(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def is_message(item: dict, role: str) -> bool:
    return item.get("role") == role and item.get("type", "message") == "message"


def message_text(item: dict) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "")
        for part in content or []
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
    )


def _user_indexes(conversation: list) -> list[int]:
    return [i for i, item in enumerate(conversation) if is_message(item, "user")]


def of_conversation(conversation: list) -> Script | None:
    """The script of the last user message, if it is one."""
    users = _user_indexes(conversation)
    return parse(message_text(conversation[users[-1]])) if users else None


def output_text(item: dict) -> str:
    """A tool output as the final message quotes it."""
    output = item.get("output")
    if isinstance(output, list):
        output = " ".join(part.get("text", "") for part in output if isinstance(part, dict))
    elif not isinstance(output, str):
        output = json.dumps(output)
    return _collapse(output, OUTPUT_CHARS)


def remembered(item: dict, account_id: str) -> dict | None:
    """What a compaction item holds, when this account can read it (another account's is just noise)."""
    if item.get("type") != "compaction":
        return None
    return sealing.unseal(item.get("encrypted_content"), account_id)


def progress(conversation: list, account_id: str) -> tuple[int, list[str]]:
    """Tool steps done since the last user message and their outputs, compacted ones included."""
    users = _user_indexes(conversation)
    steps, outputs = 0, []
    for item in conversation[users[-1] + 1 if users else 0 :]:
        memory = remembered(item, account_id)
        if memory is not None:  # it remembers everything before it: count on from there
            steps, outputs = int(memory.get("steps", 0)), [str(o) for o in memory.get("outputs", [])]
        elif item.get("type") in TOOL_CALLS:
            steps += 1
        elif item.get("type") in TOOL_OUTPUTS:
            outputs.append(output_text(item))
    return steps, outputs


def compaction_memory(conversation: list, account_id: str) -> dict:
    """What a compaction of `conversation` remembers: the latest assistant message (or the summary of an
    earlier compaction, if later), and the current script's steps and outputs."""
    summary = ""
    for item in conversation:
        memory = remembered(item, account_id)
        if memory is not None:
            summary = str(memory.get("summary", ""))
        elif is_message(item, "assistant"):
            summary = _collapse(message_text(item), SUMMARY_CHARS)
    steps, outputs = progress(conversation, account_id)
    return {"summary": summary, "steps": steps, "outputs": outputs}


# --- what the model does next ----------------------------------------------------------------------------------


def next_step(script: Script, conversation: list, account_id: str) -> ToolStep | None:
    """The tool step this response performs, or None when the final message is due."""
    done, _ = progress(conversation, account_id)
    return script.steps[done] if done < len(script.steps) else None


def final_text(script: Script, conversation: list, account_id: str) -> str:
    _, outputs = progress(conversation, account_id)
    lines = [script.say] + [f"output {number}: {text}" for number, text in enumerate(outputs, 1)]
    if script.recall:
        lines += _recall_lines(conversation, account_id)
    return "\n".join(lines)


def _recall_lines(conversation: list, account_id: str) -> list[str]:
    memories = [m for m in (remembered(item, account_id) for item in conversation) if m is not None]
    summary = memories[-1].get("summary") if memories else None
    lines = [f"recall: {summary or 'nothing'}"]
    # A gateway that had to drop a compaction item tells the model so in a developer message.
    users = _user_indexes(conversation)
    told = [item for item in conversation[users[0] + 1 :] if is_message(item, "developer")] if users else []
    if told:
        lines.append(f"told: {_collapse(message_text(told[-1]), OUTPUT_CHARS)}")
    return lines
