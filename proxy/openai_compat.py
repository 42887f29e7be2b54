"""The /v1 surface's translations: OpenAI Responses and Chat Completions requests onto a Codex turn, and back.

Parameters the Codex backend cannot honour are refused with a 400 naming them, never dropped silently. Every
field the translation reads is type-checked here, before any upstream is opened: a wrong type found later would
fail the turn after its slot was taken and its upstream opened.
"""

import time

from .errors import PoolerError
from .sse import SseParser, encode_event

# JSON types of the Responses fields we pass to the backend as they are, or handle here.
_RESPONSES_PASSED = {
    "model": (str,),
    "input": (str, list),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "reasoning": (dict,),
    "text": (dict,),
    "include": (list,),
    "prompt_cache_key": (str,),
    "max_output_tokens": (int,),
}
# Handled here: instructions become a developer message; store and stream are set by us. `user` (an end-user
# id for abuse monitoring), `metadata` (tags echoed on a stored object; nothing is stored) and `stream_options`
# (event obfuscation) change nothing in the answer, so they are accepted and not sent on.
_RESPONSES_HANDLED = {
    "instructions": (str,),
    "store": (bool,),
    "stream": (bool,),
    "metadata": (dict,),
    "user": (str,),
    "stream_options": (dict,),
    "service_tier": (str,),
}

# `user` and `metadata` (tags on a stored completion; nothing is stored) are accepted and ignored, as above.
_CHAT_HANDLED = {
    "model": (str,),
    "messages": (list,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "response_format": (dict,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "reasoning_effort": (str,),
    "stream": (bool,),
    "stream_options": (dict,),
    "user": (str,),
    "metadata": (dict,),
    "store": (bool,),
    "service_tier": (str,),
}
# Accepted when they ask for nothing the backend would do differently (compared with their JSON type too, so
# `"n": true` is not taken for 1).
_CHAT_NEUTRAL = {
    "n": (1,),
    "logprobs": (False,),
    "temperature": (),
    "top_p": (),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "stop": (),
    "seed": (),
    "logit_bias": ({},),
    "top_logprobs": (0,),
}
# Values of handled parameters that ask for what the backend will not do: refused, not ignored.
_SERVICE_TIERS = (None, "auto", "default")

_TYPE_WORDS = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object", list: "an array"}


def _expect(value, kinds: tuple, param: str, *, required: bool = False):
    """`value` when it has one of the JSON types `kinds` (or is absent and not required); else a 400 naming it."""
    if value is None and not required:
        return None
    # bool is an int to Python, never to JSON.
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    expected = " or ".join(_TYPE_WORDS[kind] for kind in kinds)
    raise PoolerError(f"Invalid type for '{param}': expected {expected}.", code="invalid_type", param=param)


def _positive(value, param: str) -> int | None:
    if _expect(value, (int,), param) is not None and value < 1:
        raise PoolerError(f"'{param}' must be at least 1.", code="integer_below_min_value", param=param)
    return value


def _check_fields(body: dict, types: dict) -> None:
    for name, kinds in types.items():
        _expect(body.get(name), kinds, name)
    if body.get("store"):
        raise PoolerError(
            "'store': true is not supported: the Codex backend keeps no responses.",
            code="unsupported_parameter",
            param="store",
        )
    if body.get("service_tier") not in _SERVICE_TIERS:
        raise PoolerError(
            f"'service_tier' {body['service_tier']!r} is not supported; use 'auto' or 'default'.",
            code="unsupported_parameter",
            param="service_tier",
        )


def _refuse(names: list[str]) -> PoolerError:
    listed = ", ".join(sorted(names))
    return PoolerError(
        f"Unsupported parameter(s) for the Codex backend: {listed}.",
        code="unsupported_parameter",
        param=sorted(names)[0],
    )


def _message(role: str, text: str) -> dict:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def responses_request(body: dict) -> dict:
    """An OpenAI Responses request as a Codex backend turn (always streamed, never stored)."""
    unknown = [k for k in body if k not in _RESPONSES_PASSED.keys() | _RESPONSES_HANDLED and body[k] is not None]
    if unknown:
        raise _refuse(unknown)
    _check_fields(body, _RESPONSES_PASSED | _RESPONSES_HANDLED)
    _positive(body.get("max_output_tokens"), "max_output_tokens")
    turn = {k: body[k] for k in _RESPONSES_PASSED if body.get(k) is not None}
    items = body.get("input", [])
    if isinstance(items, str):
        items = [_message("user", items)]
    if body.get("instructions"):
        items = [_message("developer", body["instructions"]), *items]
    turn.update(input=items, stream=True, store=False)
    return turn


def _text_part(role: str, text) -> dict:
    return {"type": "output_text" if role == "assistant" else "input_text", "text": text}


def _chat_content(content, role: str, param: str) -> list[dict]:
    if isinstance(_expect(content, (str, list), param), str):
        return [_text_part(role, content)]
    parts = []
    for index, part in enumerate(content or []):
        where = f"{param}[{index}]"
        kind = _expect(part, (dict,), where, required=True).get("type")
        if kind == "text":
            parts.append(_text_part(role, _expect(part.get("text"), (str,), f"{where}.text", required=True)))
        elif kind == "image_url" and role == "user":
            image = _expect(part.get("image_url"), (dict, str), f"{where}.image_url", required=True)
            image = image if isinstance(image, dict) else {"url": image}
            parts.append(
                {
                    "type": "input_image",
                    "image_url": _expect(image.get("url"), (str,), f"{where}.image_url.url", required=True),
                    "detail": _expect(image.get("detail"), (str,), f"{where}.image_url.detail") or "auto",
                }
            )
        else:
            raise PoolerError(
                f"Unsupported content part {kind!r} in a {role} message.", param=where, code="unsupported_content"
            )
    return parts


def _chat_tool_calls(calls, param: str) -> list[dict]:
    items = []
    for index, call in enumerate(_expect(calls, (list,), param) or []):
        where = f"{param}[{index}]"
        _expect(call, (dict,), where, required=True)
        function = _expect(call.get("function"), (dict,), f"{where}.function", required=True)
        items.append(
            {
                "type": "function_call",
                "call_id": _expect(call.get("id"), (str,), f"{where}.id") or "",
                "name": _expect(function.get("name"), (str,), f"{where}.function.name", required=True),
                "arguments": _expect(function.get("arguments"), (str,), f"{where}.function.arguments") or "",
            }
        )
    return items


def _chat_message(message, param: str) -> list[dict]:
    role = _expect(message, (dict,), param, required=True).get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return [{"type": "message", "role": "developer", "content": _chat_content(content, role, f"{param}.content")}]
    if role == "user":
        return [{"type": "message", "role": "user", "content": _chat_content(content, role, f"{param}.content")}]
    if role == "assistant":
        parts = _chat_content(content, role, f"{param}.content")
        said = [{"type": "message", "role": "assistant", "content": parts}] if parts else []
        return said + _chat_tool_calls(message.get("tool_calls"), f"{param}.tool_calls")
    if role == "tool":
        parts = _chat_content(content, role, f"{param}.content")
        return [
            {
                "type": "function_call_output",
                "call_id": _expect(message.get("tool_call_id"), (str,), f"{param}.tool_call_id") or "",
                "output": "".join(part["text"] for part in parts),
            }
        ]
    raise PoolerError(f"Unsupported message role {role!r}.", param=f"{param}.role")


def _chat_messages(messages) -> list[dict]:
    if not messages:
        raise PoolerError("'messages' must be a non-empty list.", param="messages")
    return [item for index, message in enumerate(messages) for item in _chat_message(message, f"messages[{index}]")]


def _chat_tools(tools) -> list[dict]:
    converted = []
    for index, tool in enumerate(tools or []):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise PoolerError("Only function tools are supported.", param=where, code="unsupported_parameter")
        function = _expect(tool.get("function"), (dict,), f"{where}.function", required=True)
        strict = _expect(function.get("strict"), (bool,), f"{where}.function.strict")
        converted.append(
            {
                "type": "function",
                "name": _expect(function.get("name"), (str,), f"{where}.function.name", required=True),
                "description": _expect(function.get("description"), (str,), f"{where}.function.description") or "",
                "parameters": _expect(function.get("parameters"), (dict,), f"{where}.function.parameters")
                or {"type": "object", "properties": {}},
                **({"strict": strict} if strict is not None else {}),
            }
        )
    return converted


def _chat_tool_choice(choice):
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        function = _expect(choice.get("function"), (dict,), "tool_choice.function", required=True)
        return {
            "type": "function",
            "name": _expect(function.get("name"), (str,), "tool_choice.function.name", required=True),
        }
    raise PoolerError("Unsupported tool_choice.", param="tool_choice")


def _response_format(fmt) -> dict | None:
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"format": {"type": "json_object"}}
    if fmt.get("type") == "json_schema":
        schema = _expect(fmt.get("json_schema"), (dict,), "response_format.json_schema", required=True)
        where = "response_format.json_schema"
        return {
            "format": {
                "type": "json_schema",
                "name": _expect(schema.get("name"), (str,), f"{where}.name") or "response",
                "schema": _expect(schema.get("schema"), (dict,), f"{where}.schema") or {},
                "strict": bool(_expect(schema.get("strict"), (bool,), f"{where}.strict")),
            }
        }
    raise PoolerError("Unsupported response_format.", param="response_format")


def _neutral(value, neutral: tuple) -> bool:
    return any(type(value) is type(allowed) and value == allowed for allowed in neutral)


def chat_request(body: dict) -> dict:
    """A Chat Completions request as a Codex backend turn."""
    unknown = [k for k in body if k not in _CHAT_HANDLED and k not in _CHAT_NEUTRAL and body[k] is not None]
    unknown += [k for k, neutral in _CHAT_NEUTRAL.items() if body.get(k) is not None and not _neutral(body[k], neutral)]
    if unknown:
        raise _refuse(unknown)
    _check_fields(body, _CHAT_HANDLED)
    _expect((body.get("stream_options") or {}).get("include_usage"), (bool,), "stream_options.include_usage")
    turn = {"model": body.get("model"), "input": _chat_messages(body.get("messages")), "stream": True, "store": False}
    if body.get("tools"):
        turn["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        turn["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        turn["parallel_tool_calls"] = body["parallel_tool_calls"]
    if (text := _response_format(body.get("response_format"))) is not None:
        turn["text"] = text
    tokens = _positive(body.get("max_tokens"), "max_tokens")
    if (limit := _positive(body.get("max_completion_tokens"), "max_completion_tokens") or tokens) is not None:
        turn["max_output_tokens"] = limit
    if body.get("reasoning_effort") is not None:
        turn["reasoning"] = {"effort": body["reasoning_effort"]}
    return turn


def final_response(watcher) -> dict | None:
    """The Response object a finished turn ended with: completed, or incomplete (it hit max_output_tokens, say),
    which is an answer with `status: "incomplete"` for the client, not an upstream failure."""
    if watcher.terminal in ("response.completed", "response.incomplete") and watcher.response:
        return watcher.response
    return None


def _chat_usage(usage: dict | None) -> dict:
    usage = usage or {}
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)},
        "completion_tokens_details": {
            "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
        },
    }


def _finish_reason(response: dict, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    if response.get("status") == "incomplete":
        return "length"
    return "stop"


def chat_completion(response: dict, model: str) -> dict:
    """A finished Responses object as one chat.completion."""
    text, calls = "", []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            text += "".join(p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                }
            )
    message = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(response.get("id", "")).removeprefix("resp_"),
        "object": "chat.completion",
        "created": int(response.get("created_at") or time.time()),
        "model": response.get("model") or model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish_reason(response, bool(calls)), "logprobs": None}
        ],
        "usage": _chat_usage(response.get("usage")),
    }


class ChatStreamTranslator:
    """Responses SSE events in, chat.completion.chunk events out, one event at a time."""

    def __init__(self, model: str, include_usage: bool):
        self.model, self.include_usage = model, include_usage
        self.parser = SseParser()
        self.id = "chatcmpl-stream"
        self.created = int(time.time())
        self.tool_index: dict[str, int] = {}
        self.started = False

    def _chunk(self, delta: dict, finish_reason=None, usage=None, choices=True) -> bytes:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
            if choices
            else [],
        }
        if usage is not None:
            data["usage"] = usage
        return encode_event(data)

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for event in self.parser.events(chunk):
            out.append(self._translate(event))
        return b"".join(out)

    def _translate(self, event: dict) -> bytes:
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response") or {}
            self.id = "chatcmpl-" + str(response.get("id", "")).removeprefix("resp_")
            self.model = response.get("model") or self.model
            self.started = True
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "response.output_text.delta":
            return self._chunk({"content": event.get("delta", "")})
        if kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            index = self.tool_index.setdefault(item.get("id") or item.get("call_id"), len(self.tool_index))
            return self._chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": item.get("call_id"),
                            "type": "function",
                            "function": {"name": item.get("name"), "arguments": ""},
                        }
                    ]
                }
            )
        if kind == "response.function_call_arguments.delta":
            index = self.tool_index.get(event.get("item_id"), 0)
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": event.get("delta", "")}}]})
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            out = self._chunk({}, _finish_reason(response, bool(self.tool_index)))
            if self.include_usage:
                out += self._chunk({}, usage=_chat_usage(response.get("usage")), choices=False)
            return out
        if kind in ("response.failed", "error"):
            error = (event.get("response") or {}).get("error") or event.get("error") or {}
            return encode_event(
                {
                    "error": {
                        "message": error.get("message", "upstream error"),
                        "type": error.get("type", "server_error"),
                        "code": error.get("code"),
                        "param": None,
                    }
                }
            )
        return b""

    def finish(self, watcher) -> bytes:
        return b"data: [DONE]\n\n"


def models_list(models: list[dict]) -> dict:
    return {
        "object": "list",
        "data": [{"id": m["slug"], "object": "model", "created": 0, "owned_by": "openai"} for m in models],
    }
