"""Split secrets are redacted or blocked on every client wire, each ending in its own error frame."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Tuple

import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.hooks.language_model import HookDecision, PreRequestHook
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    ResponseStart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import Gateway, Result

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
TEXT = f"Your key is {KEY} keep it safe."


def _chat_text(events: List[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


def _responses_text(events: List[Any]) -> str:
    return "".join(e["delta"] for e in events if isinstance(e, dict) and e.get("type") == "response.output_text.delta")


def _anthropic_text(events: List[Any]) -> str:
    return "".join(e["delta"].get("text", "") for e in events
                   if isinstance(e, dict) and e.get("type") == "content_block_delta")


def _gemini_text(events: List[Any]) -> str:
    return "".join(p.get("text", "") for e in events if isinstance(e, dict) for c in e.get("candidates") or ()
                   for p in (c.get("content") or {}).get("parts") or ())


# wire → (path, streaming request body, text extractor)
WIRES: Dict[str, Tuple[str, Dict[str, Any], Callable[[List[Any]], str]]] = {
    "openai_chat": ("/v1/chat/completions",
                    {"model": "default", "messages": [{"role": "user", "content": "go"}], "stream": True}, _chat_text),
    "openai_responses": ("/v1/responses", {"model": "default", "input": "go", "stream": True}, _responses_text),
    "anthropic_messages": ("/v1/messages", {"model": "default", "max_tokens": 64, "stream": True,
                                            "messages": [{"role": "user", "content": "go"}]}, _anthropic_text),
    "gemini": ("/v1beta/models/default:streamGenerateContent?alt=sse",
               {"contents": [{"role": "user", "parts": [{"text": "go"}]}]}, _gemini_text),
}


def script(chunks: List[str]) -> List[Any]:
    return [ResponseStart("resp-fixed", "up-model", 1700000000), TextStart(0), *[TextDelta(0, c) for c in chunks],
            TextEnd(0), UsageUpdate(Usage(input_tokens=3, output_tokens=9)), Finish(FinishReason.STOP)]


def split(text: str, n: int) -> List[str]:
    if n == 0:
        return list(text)
    size = -(-len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]


def run(wire: str, config: Dict[str, Any], chunks: List[str]) -> Result:
    path, body, _ = WIRES[wire]
    gw = Gateway(plugins=[GuardrailsPlugin(**config)], script=[script(chunks)])
    return gw.request(body, path=path)


@pytest.mark.parametrize("n", [2, 3, 0], ids=["2-chunks", "3-chunks", "per-char"])
@pytest.mark.parametrize("wire", sorted(WIRES))
def test_split_secret_is_redacted_on_every_wire(wire: str, n: int) -> None:
    chunks = ["Your key is " + KEY[:4]] + split(KEY[4:] + " keep it safe.", n)
    result = run(wire, {"downgoing": {"api_keys": "redact"}}, chunks)
    assert result.status == 200
    assert WIRES[wire][2](result.sse) == "Your key is [REDACTED:api_key] keep it safe."
    assert KEY[8:20].encode() not in result.body


@pytest.mark.parametrize("n", [2, 3, 0], ids=["2-chunks", "3-chunks", "per-char"])
@pytest.mark.parametrize("wire", sorted(WIRES))
def test_split_secret_blocks_with_the_wires_error_frame(wire: str, n: int) -> None:
    result = run(wire, {"downgoing": {"api_keys": "block"}}, ["Your key is "] + split(KEY + " keep it safe.", n))
    assert result.status == 200
    frames = [e for e in result.sse if isinstance(e, dict) and ("error" in e or e.get("type") == "error")]
    assert frames, f"no error frame on {wire}: {result.body[-300:]!r}"
    assert "blocked by a guardrail" in json.dumps(frames[-1])
    assert WIRES[wire][2](result.sse) == ""  # the secret and the text before it were still held
    assert KEY[:8].encode() not in result.body


@pytest.mark.parametrize("wire", sorted(WIRES))
def test_clean_stream_is_unchanged_on_every_wire(wire: str) -> None:
    path, body, _ = WIRES[wire]
    chunks = split("A perfectly clean answer about version 1.2.3 and nothing else. " * 8, 0)
    plain = Gateway(script=[script(chunks)]).request(body, path=path)
    guarded = run(wire, {"downgoing": {"api_keys": "redact", "pii_emails": "block"}}, chunks)
    assert guarded.status == plain.status == 200
    assert _strip_volatile(guarded.body) == _strip_volatile(plain.body)


def _strip_volatile(body: bytes) -> bytes:
    # Some encoders stamp a wall-clock time or a fresh id per response; everything else must match.
    import re

    body = re.sub(rb'"(created_at|created|createTime)": ?\d+', b'"t": 0', body)
    return re.sub(rb'"(resp|msg|chatcmpl|rs|item)_[A-Za-z0-9_-]+"', b'"id"', body)


def reasoning_script(thinking: List[str], text: str = "Done.") -> List[Any]:
    return [ResponseStart("resp-fixed", "up-model", 1700000000), ReasoningStart(0, "anthropic_messages"),
            *[ReasoningDelta(0, c) for c in thinking], ReasoningDelta(0, "", signature="sig-abc"), ReasoningEnd(0),
            TextStart(1), TextDelta(1, text), TextEnd(1), Finish(FinishReason.STOP)]


def _anthropic_thinking(events: List[Any]) -> Tuple[str, List[str]]:
    deltas = [e["delta"] for e in events if isinstance(e, dict) and e.get("type") == "content_block_delta"]
    return ("".join(d.get("thinking", "") for d in deltas if d.get("type") == "thinking_delta"),
            [d["signature"] for d in deltas if d.get("type") == "signature_delta"])


def test_reasoning_is_never_rewritten_but_counted() -> None:
    path, body, _ = WIRES["anthropic_messages"]
    plugin = GuardrailsPlugin(downgoing={"api_keys": "redact"})
    thinking = f"The user pasted {KEY} earlier."
    gw = Gateway(plugins=[plugin], script=[reasoning_script(split(thinking, 3), text=f"Use {KEY[:20]}" + KEY[20:])])
    result = gw.request(body, path=path)
    assert _anthropic_thinking(result.sse) == (thinking, ["sig-abc"])  # signed text stays as signed
    assert _anthropic_text(result.sse) == "Use [REDACTED:api_key]"
    assert plugin.stats()["downgoing"]["api_keys"] == {"redact": 1, "warn": 1}


@pytest.mark.parametrize("n", [2, 0], ids=["2-chunks", "per-char"])
def test_reasoning_can_block(n: int) -> None:
    path, body, _ = WIRES["anthropic_messages"]
    gw = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": "block"})],
                 script=[reasoning_script(["I will reveal "] + split(KEY + " now", n))])
    result = gw.request(body, path=path)
    assert any(isinstance(e, dict) and e.get("type") == "error" for e in result.sse)
    assert KEY[:8] not in _anthropic_thinking(result.sse)[0] and KEY[:8].encode() not in result.body


def test_clean_reasoning_with_signature_is_unchanged() -> None:
    path, body, _ = WIRES["anthropic_messages"]
    script = reasoning_script(split("Let me think about version 1.2.3 carefully. " * 10, 0))
    plain = Gateway(script=[list(script)]).request(body, path=path)
    guarded = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": "block", "pii_emails": "redact"})],
                      script=[list(script)]).request(body, path=path)
    assert _strip_volatile(guarded.body) == _strip_volatile(plain.body)
    assert _anthropic_thinking(guarded.sse)[1] == ["sig-abc"]


class _Cache(PreRequestHook):
    """Another plugin's cache hit: an answer no upstream gave."""

    def check(self, ctx: Any) -> HookDecision:
        return HookDecision.respond(Generation("cached", ctx.prompt.model, (TextPart(TEXT),), FinishReason.STOP))


@pytest.mark.parametrize("stream", [False, True])
def test_a_cache_hit_is_checked_like_an_upstreams_answer(stream: bool) -> None:
    """A pre-request hook's respond()ed answer passes the response checks, streamed or not."""
    gw = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": "redact"})], hooks=[_Cache()])
    r = gw.chat("hi", stream=stream)
    assert r.status == 200 and r.text == "Your key is [REDACTED:api_key] keep it safe."
    assert KEY not in r.body.decode() and gw.executor.calls == []
    blocked = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": "block"})], hooks=[_Cache()]).chat("hi")
    assert blocked.status == 400 and KEY not in blocked.body.decode()
