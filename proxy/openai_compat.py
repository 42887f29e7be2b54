"""The /v1 surface's translations: OpenAI Responses and Chat Completions requests onto a Codex turn, and back.

Parameters the Codex backend cannot honour are refused with a 400 naming them, never dropped silently.
"""

import time

from .errors import PoolerError
from .sse import SseParser, encode_event

# Responses parameters passed to the backend as they are.
_RESPONSES_PASSED = {
    "model",
    "input",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "include",
    "prompt_cache_key",
    "max_output_tokens",
}
# Accepted and handled here: instructions become a developer message; store and stream are set by us.
_RESPONSES_HANDLED = {"instructions", "store", "stream", "metadata", "user", "stream_options", "service_tier"}

_CHAT_HANDLED = {
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
}
# Accepted when they ask for nothing the backend would do differently.
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
    unknown = [k for k in body if k not in _RESPONSES_PASSED | _RESPONSES_HANDLED and body[k] is not None]
    if unknown:
        raise _refuse(unknown)
    turn = {k: body[k] for k in _RESPONSES_PASSED if body.get(k) is not None}
    items = body.get("input", [])
    if isinstance(items, str):
        items = [_message("user", items)]
    elif not isinstance(items, list):
        raise PoolerError("'input' must be a string or a list of items.", param="input")
    if body.get("instructions"):
        if not isinstance(body["instructions"], str):
            raise PoolerError("'instructions' must be a string.", param="instructions")
        items = [_message("developer", body["instructions"]), *items]
    turn.update(input=items, stream=True, store=False)
    return turn


def _chat_content(content, role: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if not isinstance(content, list):
        raise PoolerError(f"Message content of a {role} message must be a string or a list.", param="messages")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")})
        elif kind == "image_url" and role == "user":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(
                {
                    "type": "input_image",
                    "image_url": url,
                    "detail": (image or {}).get("detail", "auto") if isinstance(image, dict) else "auto",
                }
            )
        else:
            raise PoolerError(
                f"Unsupported content part {kind!r} in a {role} message.", param="messages", code="unsupported_content"
            )
    return parts


def _chat_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise PoolerError("'messages' must be a non-empty list.", param="messages")
    items = []
    for message in messages:
        if not isinstance(message, dict):
            raise PoolerError("Each message must be an object.", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            items.append(
                {"type": "message", "role": "developer", "content": _chat_content(message.get("content"), "developer")}
            )
        elif role == "user":
            items.append({"type": "message", "role": "user", "content": _chat_content(message.get("content"), role)})
        elif role == "assistant":
            content = _chat_content(message.get("content"), role)
            if content:
                items.append({"type": "message", "role": "assistant", "content": content})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments", ""),
                    }
                )
        elif role == "tool":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            items.append(
                {"type": "function_call_output", "call_id": message.get("tool_call_id", ""), "output": content or ""}
            )
        else:
            raise PoolerError(f"Unsupported message role {role!r}.", param="messages")
    return items


def _chat_tools(tools) -> list[dict]:
    converted = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise PoolerError("Only function tools are supported.", param="tools", code="unsupported_parameter")
        function = tool.get("function") or {}
        converted.append(
            {
                "type": "function",
                "name": function.get("name"),
                "description": function.get("description", ""),
                "parameters": function.get("parameters", {"type": "object", "properties": {}}),
                **({"strict": function["strict"]} if "strict" in function else {}),
            }
        )
    return converted


def _chat_tool_choice(choice):
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    raise PoolerError("Unsupported tool_choice.", param="tool_choice")


def _response_format(fmt) -> dict | None:
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"format": {"type": "json_object"}}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema") or {}
        return {
            "format": {
                "type": "json_schema",
                "name": schema.get("name", "response"),
                "schema": schema.get("schema", {}),
                "strict": bool(schema.get("strict", False)),
            }
        }
    raise PoolerError("Unsupported response_format.", param="response_format")


def chat_request(body: dict) -> dict:
    """A Chat Completions request as a Codex backend turn."""
    unknown = [k for k in body if k not in _CHAT_HANDLED and k not in _CHAT_NEUTRAL and body[k] is not None]
    unknown += [k for k, neutral in _CHAT_NEUTRAL.items() if body.get(k) is not None and body[k] not in neutral]
    if unknown:
        raise _refuse(unknown)
    turn = {"model": body.get("model"), "input": _chat_messages(body.get("messages")), "stream": True, "store": False}
    if body.get("tools"):
        turn["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        turn["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        turn["parallel_tool_calls"] = body["parallel_tool_calls"]
    if (text := _response_format(body.get("response_format"))) is not None:
        turn["text"] = text
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        turn["max_output_tokens"] = limit
    if body.get("reasoning_effort"):
        turn["reasoning"] = {"effort": body["reasoning_effort"]}
    return turn


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
