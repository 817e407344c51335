"""A provider's server-side tool blocks (OpaquePart / OpaqueBlock) and text annotations are scanned like the text.

Built by hand at the canonical level (routeplane.testing's scripted upstream), so they hold whatever a
wire codec makes of the provider's blocks: answers streamed and not, and the history sent up.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional, Sequence

import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.app import AppBuilder, Plugin, PluginId
from routeplane.hooks.language_model import ExecutionHook, HookDecision, PreRequestHook
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    OpaqueBlock,
    OpaquePart,
    ResponseStart,
    Role,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import Gateway, Result

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
ANTHROPIC, GEMINI, RESPONSES = "anthropic_messages", "gemini", "openai_responses"
FILLER = "The quick brown fox jumps over the lazy dog. " * 8  # longer than the hold window

REDACT: Dict[str, Any] = {"downgoing": {"api_keys": "redact", "pii_emails": "redact"},
                          "upgoing": {"api_keys": "redact", "pii_emails": "redact"}}
BLOCK: Dict[str, Any] = {"downgoing": {"api_keys": "block"}, "upgoing": {"api_keys": "block"}}
# A match that needs its context: the cited text alone ("falcon launches") would not match it.
CODENAME: Dict[str, Any] = {"custom_patterns": [{"name": "codename", "regex": r"(?i)project\s+(?P<secret>falcon)"}],
                            "custom_downgoing": {"codename": "redact"}, "custom_upgoing": {"codename": "redact"}}

ANTHROPIC_BODY = {"model": "default", "max_tokens": 64, "messages": [{"role": "user", "content": "go"}]}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "go"}]}]}
RESPONSES_BODY = {"model": "default", "input": "go"}


def web_fetch_result(text: str) -> Dict[str, Any]:
    """An Anthropic web_fetch_tool_result: the fetched page's text in plain, in a document's text source."""
    return {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_01Fetch",
            "content": {"type": "web_fetch_result", "url": "https://example.com/notes",
                        "retrieved_at": "2026-01-01T00:00:00Z",
                        "content": {"type": "document", "title": "Notes",
                                    "source": {"type": "text", "media_type": "text/plain", "data": text}}}}


def web_search_result(title: str) -> Dict[str, Any]:
    # encrypted_content is the provider's, checked when the client sends it back: never rewritten.
    return {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01Search",
            "content": [{"type": "web_search_result", "url": "https://example.com/", "title": title,
                         "encrypted_content": "Eo8B" + KEY, "page_age": None}]}


class Capture(ExecutionHook):
    """Registered after the plugin: sees the Generation the client's encoder gets."""

    def __init__(self) -> None:
        self.results: List[Generation] = []

    def on_success(self, ctx: PipelineContext, result: Any) -> Optional[Generation]:
        if isinstance(result, Generation):
            self.results.append(result)
        return None


def answer(parts: Sequence[Any], config: Dict[str, Any], wire: str = ANTHROPIC) -> tuple:
    gen = Generation(id="msg_fixed", model="up-model", parts=tuple(parts), finish_reason=FinishReason.STOP,
                     usage=Usage(input_tokens=3, output_tokens=5))
    capture = Capture()
    gw = Gateway(plugins=[GuardrailsPlugin(**config)], hooks=[capture], script=[gen])
    body = {ANTHROPIC: ANTHROPIC_BODY, GEMINI: GEMINI_BODY, RESPONSES: RESPONSES_BODY}.get(wire, {
        "model": "default", "messages": [{"role": "user", "content": "go"}]})
    result = gw.request(body, wire=wire)
    return result, (capture.results[0] if capture.results else None)


# --- non-streamed answers --------------------------------------------------------


def test_answer_opaque_blocks_are_redacted_in_a_copy_and_opaque_fields_kept() -> None:
    fetch = web_fetch_result(f"API_KEY={KEY}\nmail ops@example.com")
    search = web_search_result(f"Leaked {KEY}")
    originals = copy.deepcopy([fetch, search])
    result, gen = answer([TextPart("Fetched."), OpaquePart(ANTHROPIC, fetch), OpaquePart(ANTHROPIC, search)],
                         REDACT)
    assert result.status == 200 and gen is not None
    new_fetch, new_search = gen.parts[1].block, gen.parts[2].block
    assert new_fetch["content"]["content"]["source"]["data"] == f"API_KEY={RED}\nmail [REDACTED:email]"
    assert new_fetch["content"]["url"] == "https://example.com/notes"
    assert new_search["content"][0]["title"] == f"Leaked {RED}"
    assert new_search["content"][0]["encrypted_content"] == "Eo8B" + KEY  # round-trips unchanged
    assert [fetch, search] == originals  # the upstream's dicts were never mutated
    assert gen.parts[0] == TextPart("Fetched.")


def test_answer_opaque_block_blocks_like_text() -> None:
    result, _ = answer([TextPart("Fetched."), OpaquePart(ANTHROPIC, web_fetch_result(f"key {KEY}"))], BLOCK)
    assert result.status == 400
    error = result.json["error"]
    assert error["type"] == "invalid_request_error" and "web_fetch_tool_result" in error["message"]
    assert "blocked by a guardrail" in error["message"] and KEY.encode() not in result.body


def test_answer_ids_and_names_are_not_rewritten() -> None:
    ids = {"custom_patterns": [{"name": "toolid", "regex": r"srvtoolu_\w+"}], "custom_downgoing": {"toolid": "redact"}}
    block = web_fetch_result("see srvtoolu_01Fetch")
    result, gen = answer([OpaquePart(ANTHROPIC, block)], ids)
    assert result.status == 200
    assert gen.parts[0].block["tool_use_id"] == "srvtoolu_01Fetch"  # pairs the result with its call
    assert gen.parts[0].block["content"]["content"]["source"]["data"] == "see [REDACTED:toolid]"
    # A name cannot be rewritten (it must match a tool): redact acts as block on it, as on tool calls.
    mcp = {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": KEY, "server_name": "docs", "input": {}}
    result, _ = answer([OpaquePart(ANTHROPIC, mcp)], REDACT)
    assert result.status == 400 and "mcp_tool_use name" in result.json["error"]["message"]


def test_answer_gemini_code_execution_keeps_thought_signature_and_media() -> None:
    code = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{KEY}\n"}, "thoughtSignature": "CiQ" + KEY}
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBOR" + KEY}}
    result, gen = answer([OpaquePart(GEMINI, code), OpaquePart(GEMINI, image), TextPart("done")], REDACT, GEMINI)
    assert result.status == 200
    assert gen.parts[0].block == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{RED}\n"},
                                  "thoughtSignature": "CiQ" + KEY}
    assert gen.parts[1].block is image


def test_answer_responses_items_redacted_except_encrypted_and_base64() -> None:
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed",
              "action": {"type": "search", "query": "who is ops@example.com"}}
    picture = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "iVBOR" + KEY}
    shot = {"type": "computer_call_output", "call_id": "call_1",
            "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,iVBOR" + KEY}}
    # A call's arguments are JSON text: read decoded (an escaped spelling is found) and kept valid JSON.
    escaped = KEY.replace("p", "\\u0070", 1)
    mcp = {"type": "mcp_call", "id": "mcp_1", "name": "lookup", "server_label": "docs",
           "arguments": '{"token": "' + escaped + '", "n": 1}', "output": f"token {KEY}"}
    result, gen = answer([OpaquePart(RESPONSES, search), OpaquePart(RESPONSES, picture),
                          OpaquePart(RESPONSES, shot), OpaquePart(RESPONSES, mcp), TextPart("ok")], REDACT, RESPONSES)
    assert result.status == 200
    assert gen.parts[0].block["action"]["query"] == "who is [REDACTED:email]"
    assert gen.parts[1].block is picture and gen.parts[2].block is shot
    assert json.loads(gen.parts[3].block["arguments"]) == {"token": RED, "n": 1}
    assert gen.parts[3].block["output"] == f"token {RED}" and gen.parts[3].block["name"] == "lookup"


def test_answer_opaque_part_of_another_wire_is_not_scanned() -> None:
    # A Chat client never gets an Anthropic block (its encoder leaves it out): nothing there to stop.
    result, gen = answer([TextPart("Fetched."), OpaquePart(ANTHROPIC, web_fetch_result(f"key {KEY}"))], BLOCK,
                         wire="openai_chat")
    assert result.status == 200 and result.json["choices"][0]["message"]["content"] == "Fetched."


def citation(cited: str) -> Dict[str, Any]:
    return {"type": "web_search_result_location", "url": "https://example.com/", "title": "Example",
            "cited_text": cited, "encrypted_index": "EpMB" + KEY}


def test_answer_annotations_are_redacted_with_their_text() -> None:
    text = TextPart(f"The key is {KEY}.", annotations=(citation(f"key: {KEY}"),), annotations_protocol=ANTHROPIC)
    result, gen = answer([text], REDACT)
    assert result.status == 200
    (part,) = gen.parts
    assert part.text == f"The key is {RED}."
    assert part.annotations == ({**citation(f"key: {RED}"), "encrypted_index": "EpMB" + KEY},)
    assert text.annotations[0]["cited_text"] == f"key: {KEY}"  # not mutated


def test_answer_annotation_quoting_a_secret_of_its_text_is_redacted_even_without_its_context() -> None:
    text = TextPart("Project Falcon launches in May.", annotations=(citation("Falcon launches in May"),),
                    annotations_protocol=ANTHROPIC)
    result, gen = answer([text], CODENAME)
    (part,) = gen.parts
    assert part.text == "Project [REDACTED:codename] launches in May."
    assert part.annotations[0]["cited_text"] == "[REDACTED:codename] launches in May"


def test_answer_annotation_blocks() -> None:
    text = TextPart("See the source.", annotations=(citation(f"key: {KEY}"),), annotations_protocol=ANTHROPIC)
    result, _ = answer([text], BLOCK)
    assert result.status == 400 and "text annotation" in result.json["error"]["message"]


# --- streams ---------------------------------------------------------------------


def stream(script: List[StreamPart], config: Dict[str, Any], wire: str = ANTHROPIC) -> Result:
    gw = Gateway(plugins=[GuardrailsPlugin(**config)], script=[script])
    if wire == ANTHROPIC:
        return gw.request({**ANTHROPIC_BODY, "stream": True}, wire=wire)
    if wire == RESPONSES:
        return gw.request({**RESPONSES_BODY, "stream": True}, wire=wire)
    if wire == GEMINI:
        return gw.request(GEMINI_BODY, wire=wire, stream=True)
    return gw.request({"model": "default", "messages": [{"role": "user", "content": "go"}], "stream": True},
                      wire=wire)


def sent(result: Result) -> List[StreamPart]:
    """The parts the client's encoder got, in order (after every stream hook)."""
    return [e.part for m, e in result.events if m == "on_stream_part"]


def framed(parts: List[StreamPart]) -> List[StreamPart]:
    return [ResponseStart("msg_fixed", "up-model", 1700000000), *parts,
            UsageUpdate(Usage(input_tokens=3, output_tokens=7)), Finish(FinishReason.STOP)]


def test_stream_opaque_blocks_are_redacted() -> None:
    use = {"type": "server_tool_use", "id": "srvtoolu_01Fetch", "name": "web_fetch",
           "input": {"url": f"https://example.com/?key={KEY}"}}
    fetch = web_fetch_result(f"API_KEY={KEY}")
    result = stream(framed([OpaqueBlock(0, ANTHROPIC, use), OpaqueBlock(1, ANTHROPIC, fetch),
                            TextStart(2), TextDelta(2, "Fetched."), TextEnd(2)]), REDACT)
    assert result.status == 200
    blocks = [p for p in sent(result) if isinstance(p, OpaqueBlock)]
    assert [b.block["type"] for b in blocks] == ["server_tool_use", "web_fetch_tool_result"]
    assert blocks[0].block["input"] == {"url": f"https://example.com/?key={RED}"}
    assert blocks[1].block["content"]["content"]["source"]["data"] == f"API_KEY={RED}"
    assert fetch["content"]["content"]["source"]["data"] == f"API_KEY={KEY}"  # not mutated


def test_stream_opaque_block_blocks_before_it_leaves() -> None:
    result = stream(framed([OpaqueBlock(0, ANTHROPIC, web_fetch_result(f"key {KEY}")),
                            TextStart(1), TextDelta(1, "Fetched."), TextEnd(1)]), BLOCK)
    assert not any(isinstance(p, OpaqueBlock) for p in sent(result))
    errors = [e for e in result.sse if isinstance(e, dict) and e.get("type") == "error"]
    assert errors and "web_fetch_tool_result" in errors[0]["error"]["message"]
    assert result.settlements[0].outcome == "aborted" and KEY.encode() not in result.body


@pytest.mark.parametrize("wire", [GEMINI, ANTHROPIC], ids=["same-wire", "other-wire"])
def test_stream_opaque_block_never_overtakes_held_text(wire: str) -> None:
    # Gemini-like: no TextEnd before the code block; the held text must still go out first (also where the
    # client's encoder leaves the block out: ctx.result keeps the order).
    code = {"executableCode": {"language": "PYTHON", "code": "print(1)"}}
    script = framed([TextStart(0), TextDelta(0, "Let me run "), TextDelta(0, "some code."),
                     OpaqueBlock(1, GEMINI, code), TextStart(2), TextDelta(2, "It printed 1."), TextEnd(2)])
    result = stream(script, REDACT, wire=wire)
    assert result.status == 200
    order = [(type(p).__name__, getattr(p, "index", None)) for p in sent(result)
             if isinstance(p, (TextDelta, OpaqueBlock, TextStart, TextEnd))]
    assert order == [("TextStart", 0), ("TextDelta", 0), ("TextDelta", 0), ("OpaqueBlock", 1),
                     ("TextStart", 2), ("TextDelta", 2), ("TextEnd", 2)]


def test_stream_annotation_keeps_its_place_after_held_text_and_is_redacted() -> None:
    note = TextAnnotation(0, ANTHROPIC, citation(f"key: {KEY}"))
    script = framed([TextStart(0), TextDelta(0, f"The key is {KEY}"), TextDelta(0, " as quoted."), note,
                     TextDelta(0, " More text follows."), TextEnd(0)])
    result = stream(script, REDACT)
    parts = [p for p in sent(result) if isinstance(p, (TextDelta, TextAnnotation))]
    at = next(i for i, p in enumerate(parts) if isinstance(p, TextAnnotation))
    assert "".join(p.text for p in parts[:at]) == f"The key is {RED} as quoted."
    assert "".join(p.text for p in parts[at + 1:]) == " More text follows."
    assert parts[at].annotation["cited_text"] == f"key: {RED}"
    assert parts[at].annotation["encrypted_index"] == "EpMB" + KEY
    assert note.annotation["cited_text"] == f"key: {KEY}"  # not mutated


def test_stream_annotation_gets_the_redaction_of_the_text_it_follows() -> None:
    # Responses order: the annotation after the text it annotates (which the window still holds).
    note = TextAnnotation(0, ANTHROPIC, citation("Falcon launches in May"))
    script = framed([TextStart(0), TextDelta(0, "Project Falcon"), TextDelta(0, " launches in May."), note,
                     TextEnd(0)])
    result = stream(script, CODENAME)
    parts = [p for p in sent(result) if isinstance(p, (TextDelta, TextAnnotation))]
    assert isinstance(parts[-1], TextAnnotation)
    assert "".join(p.text for p in parts[:-1]) == "Project [REDACTED:codename] launches in May."
    assert parts[-1].annotation["cited_text"] == "[REDACTED:codename] launches in May"


def test_stream_annotation_blocks() -> None:
    script = framed([TextStart(0), TextAnnotation(0, ANTHROPIC, citation(f"key: {KEY}")),
                     TextDelta(0, FILLER), TextEnd(0)])
    result = stream(script, BLOCK)
    assert not any(isinstance(p, TextAnnotation) for p in sent(result))
    errors = [e for e in result.sse if isinstance(e, dict) and e.get("type") == "error"]
    assert errors and "text block 0 annotation" in errors[0]["error"]["message"]


def test_stream_opaque_block_of_another_wire_is_not_scanned() -> None:
    result = stream(framed([OpaqueBlock(0, ANTHROPIC, web_fetch_result(f"key {KEY}")),
                            TextStart(1), TextDelta(1, "Fetched."), TextEnd(1)]), BLOCK, wire="openai_chat")
    assert result.status == 200 and result.text == "Fetched."
    assert result.settlements[0].outcome == "success"


# --- the history sent up ----------------------------------------------------------------


class _History(PreRequestHook):
    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = tuple(parts)

    def check(self, ctx: PipelineContext) -> HookDecision:
        prompt = ctx.prompt
        history = (Message(Role.USER, (TextPart("fetch it"),)), Message(Role.ASSISTANT, self.parts))
        ctx.replace_prompt(prompt.replace(messages=history + tuple(prompt.messages)))
        return HookDecision.allow()


class HistoryPlugin(Plugin):
    """Puts a same-wire assistant turn with opaque blocks in the prompt, as the wire's decoder would."""

    id = PluginId("history")

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = parts

    def install(self, app: AppBuilder) -> None:
        app.language_model_builder().pre_request_hook(_History(self.parts))


def upgoing(parts: Sequence[Any], config: Dict[str, Any]) -> tuple:
    gw = Gateway(plugins=[HistoryPlugin(parts), GuardrailsPlugin(**config)])
    result = gw.request(ANTHROPIC_BODY, wire=ANTHROPIC)
    return result, (gw.executor.calls[-1].prompt if gw.executor.calls else None)


def test_history_opaque_blocks_and_annotations_are_redacted_before_the_upstream() -> None:
    search = web_search_result(f"Leaked {KEY}")
    fetch = web_fetch_result(f"mail ops@example.com, key {KEY}")
    text = TextPart(f"The key is {KEY}.", annotations=(citation(f"key: {KEY}"),), annotations_protocol=ANTHROPIC)
    result, prompt = upgoing([OpaquePart(ANTHROPIC, search, "messages[1].content[0]"),
                              OpaquePart(ANTHROPIC, fetch, "messages[1].content[1]"), text], REDACT)
    assert result.status == 200
    new_search, new_fetch, new_text = prompt.messages[1].parts
    assert new_search.block["content"][0]["title"] == f"Leaked {RED}"
    assert new_search.block["content"][0]["encrypted_content"] == "Eo8B" + KEY
    assert new_search.path == "messages[1].content[0]"
    assert new_fetch.block["content"]["content"]["source"]["data"] == f"mail [REDACTED:email], key {RED}"
    assert new_text.text == f"The key is {RED}." and new_text.annotations[0]["cited_text"] == f"key: {RED}"
    assert search["content"][0]["title"] == f"Leaked {KEY}"  # not mutated


def test_history_opaque_block_blocks_with_a_400_naming_it() -> None:
    result, prompt = upgoing([OpaquePart(ANTHROPIC, web_fetch_result(f"key {KEY}"), "messages[1].content[0]"),
                              TextPart("ok")], BLOCK)
    assert result.status == 400 and prompt is None
    assert result.json["error"]["message"] == (
        "The request was blocked by a guardrail (api_keys in messages[1] (assistant) web_fetch_tool_result).")


def test_warn_counts_opaque_findings_and_changes_nothing() -> None:
    plugin = GuardrailsPlugin()  # every detector warns
    block = OpaqueBlock(1, ANTHROPIC, web_fetch_result(f"key {KEY}"))
    note = TextAnnotation(2, ANTHROPIC, citation("mail ops@example.com"))
    script = framed([TextStart(0), TextDelta(0, "Fetching."), TextEnd(0), block,
                     TextStart(2), note, TextDelta(2, "Done."), TextEnd(2)])
    gw = Gateway(plugins=[plugin], script=[script])
    result = gw.request({**ANTHROPIC_BODY, "stream": True}, wire=ANTHROPIC)
    parts = sent(result)
    assert block in parts and note in parts
    assert [p for p in parts if isinstance(p, (OpaqueBlock, TextAnnotation))] == [block, note]
    assert plugin.stats() == {"downgoing": {"api_keys": {"warn": 1}, "pii_emails": {"warn": 1}}}


def test_stream_annotation_inside_a_redacted_secret_follows_the_rewritten_chunk() -> None:
    # The annotation came between two halves of a secret: the redaction merges them into one chunk, and
    # the annotation leaves right after it (never between, never lost).
    note = TextAnnotation(0, ANTHROPIC, citation("a quote"))
    script = framed([TextStart(0), TextDelta(0, "key " + KEY[:12]), note, TextDelta(0, KEY[12:] + " end."),
                     TextDelta(0, " Tail."), TextEnd(0)])
    result = stream(script, REDACT)
    parts = [p for p in sent(result) if isinstance(p, (TextDelta, TextAnnotation))]
    at = parts.index(note)
    assert "".join(p.text for p in parts[:at]) == f"key {RED} end."
    assert "".join(p.text for p in parts[at + 1:]) == " Tail."
    assert result.text == f"key {RED} end. Tail."
