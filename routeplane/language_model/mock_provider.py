"""The built-in `mock` provider: answers locally so the gateway works with no key and no network.

Behaviour, by what the prompt holds:
- tools offered, `tool_choice` not `none`, and the last message is the
  user's → one call of the first tool (or the forced one) with arguments
  built from its schema's required properties (mode "tool call"); a custom
  (free-text) tool gets the user's text as its input;
- otherwise an echo: `You said: <last user text>` (after tool results:
  `Tool results: <text>`).
Model names select extra behaviour: `fail-<status>` raises that upstream
status, `slow-<ms>` sleeps before answering. Usage is deterministic
(4 characters a token) and marked as reported, so accounting tests can
compute it by hand.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Dict, Iterator, List

from ..errors import UpstreamStatusError
from .routing import RoutingTarget
from .stream import estimate_tokens, prompt_text
from .types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    Prompt,
    ResponseStart,
    Role,
    StreamPart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    UsageUpdate,
)


class MockProvider:
    def complete(self, target: RoutingTarget, prompt: Prompt) -> Generation:
        self._behave(target)
        return self._answer(target, prompt)

    def stream(self, target: RoutingTarget, prompt: Prompt) -> Iterator[StreamPart]:
        self._behave(target)
        return self._stream(self._answer(target, prompt))

    def _behave(self, target: RoutingTarget) -> None:
        model = target.model
        if model.startswith("fail-") and model[5:].isdigit():
            status = int(model[5:])
            raise UpstreamStatusError(
                f"{target.provider} returned HTTP {status}: mock failure", provider=target.provider,
                upstream_status=status, retriable=status >= 500 or status in (408, 429),
                status=status if status < 500 else 502,
            )
        if model.startswith("slow-") and model[5:].isdigit():
            time.sleep(int(model[5:]) / 1000.0)

    def _answer(self, target: RoutingTarget, prompt: Prompt) -> Generation:
        last = prompt.messages[-1] if prompt.messages else Message(Role.USER, (TextPart(""),))
        call = self._tool_call(prompt, last)
        if call is not None:
            parts: tuple = (call,)
            finish = FinishReason.TOOL_CALLS
            out_chars = len(call.name) + len(call.arguments)
        else:
            if last.role is Role.TOOL:
                text = "Tool results: " + "; ".join(p.text() for p in last.parts if isinstance(p, ToolResultPart))
            else:
                text = "You said: " + last.text()
            if prompt.params.max_tokens is not None and estimate_tokens(text) > prompt.params.max_tokens:
                text = text[: max(0, prompt.params.max_tokens * 4)]
                finish = FinishReason.LENGTH
            else:
                finish = FinishReason.STOP
            parts = (TextPart(text),)
            out_chars = len(text)
        # surrogatepass: a client's JSON may carry a lone surrogate escape ("\ud800"), which is still text
        digest = hashlib.sha1(prompt_text(prompt).encode("utf-8", "surrogatepass")).hexdigest()[:24]
        usage = Usage(input_tokens=max(1, estimate_tokens(prompt_text(prompt))), output_tokens=(out_chars + 3) // 4)
        return Generation(id=f"mock-{digest}", model=target.model, parts=parts, finish_reason=finish, usage=usage,
                          created=int(time.time()))

    def _tool_call(self, prompt: Prompt, last: Message) -> Any:
        if not prompt.tools or last.role is not Role.USER:
            return None
        choice = prompt.tool_choice
        if choice is not None and choice.mode == "none":
            return None
        tool = prompt.tools[0]
        if choice is not None and choice.mode == "tool":
            tool = next((t for t in prompt.tools if t.name == choice.name), tool)
        call_id = "call_" + hashlib.sha1((tool.name + last.text()).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        if tool.custom:  # a custom tool takes free text: the user's own
            return ToolCallPart(call_id, tool.name, last.text(), custom=True)
        args = _example_arguments(tool.parameters)
        return ToolCallPart(call_id, tool.name, json.dumps(args, separators=(",", ":")))

    def _stream(self, gen: Generation) -> Iterator[StreamPart]:
        yield ResponseStart(gen.id, gen.model, gen.created, Usage(input_tokens=gen.usage.input_tokens))
        for i, part in enumerate(gen.parts):
            if isinstance(part, TextPart):
                yield TextStart(i)
                for piece in _pieces(part.text):
                    yield TextDelta(i, piece)
                yield TextEnd(i)
            elif isinstance(part, ToolCallPart):
                yield ToolCallStart(i, part.id, part.name, custom=part.custom)
                # arguments in several fragments, as real providers send them
                for piece in _pieces(part.arguments, size=8):
                    yield ToolCallDelta(i, piece)
                yield ToolCallEnd(i)
        yield UsageUpdate(gen.usage)
        yield Finish(gen.finish_reason)


def _pieces(text: str, size: int = 0) -> List[str]:
    if size:
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _example_arguments(schema: Any) -> Dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else list(props)[:1]
    out: Dict[str, Any] = {}
    for name in names:  # a client's schema may be anything: never fail on it
        spec = props.get(name) if isinstance(props.get(name), dict) else {}
        kind = spec.get("type")
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            out[name] = enum[0]
        elif kind in ("integer", "number"):
            out[name] = 1
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = "example"
    return out
