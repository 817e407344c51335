"""Property: an upstream answer on the paths the wires grew in session 10 (Chat tier/fingerprint, Azure's
id-less opening, streamed citations, per-chunk usage, failed finishes; Responses terminal-only items, done
items without `added`, `phase`, summary parts, reasoning ids; Gemini grounding/safety/citations/feedback,
parallel calls; Anthropic error details) decodes to a value or an UpstreamError, and what it decodes to is
encoded for a client of every wire, plain and streamed, as JSON or a clean error frame, never a crash.

The seeds below reach those paths. They are mutated by test_codec_fuzz.py's strategies (`mutated`,
`hostile_streams`), have every field mistyped or deleted in turn, a few at once (`confused`), and streams
mixed with their ids crossed (`mixed`). A hunt: `S10_FUZZ_EXAMPLES=2000 pytest tests/test_s10_fuzz.py` (every
mistyped value at every field, and that many examples); the committed run stays small. The pinned tests at
the end are what the hunt found.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeplane.errors import RouteplaneError, UpstreamError
from routeplane.language_model.types import Generation, Prompt
from routeplane.protocols import client_codecs, provider_codecs
from routeplane.protocols.anthropic_messages import MessagesClientCodec
from routeplane.protocols.gemini import GeminiClientCodec
from routeplane.protocols.openai_chat import ChatClientCodec
from routeplane.protocols.sse import SSEEvent, SSEParser
from tests.test_codec_fuzz import CLIENT_SEEDS, HOSTILE, TARGETS, USAGE_OAI, WIRES, hostile_streams, mutated

EXAMPLES = int(os.environ.get("S10_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# --- seeds that reach the new paths ------------------------------------------------------

CITE = {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 2, "url": "https://x.invalid/",
                                                  "title": "X"}}
RESP_CITE = {"type": "url_citation", "start_index": 0, "end_index": 2, "url": "https://x.invalid/", "title": "X"}
LOGPROBS = {"content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}], "refusal": None}

RESPONSE_SEEDS: Dict[str, List[Any]] = {
    "openai_chat": [
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "service_tier": "default",
         "system_fingerprint": "fp_1",
         "choices": [{"index": 0, "finish_reason": "stop", "logprobs": LOGPROBS, "message": {
             "role": "assistant", "content": "hi there", "reasoning_content": "t", "annotations": [CITE]}}],
         "usage": USAGE_OAI},
        {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " there"}],
            "annotations": [CITE]}}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "error", "message": {"content": "h"},
                                               "error": {"message": "boom", "code": 400, "param": "messages",
                                                         "type": "invalid_request_error"}}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "\"a\""}}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "insufficient_system_resource",
                                               "message": {"content": "h"}}]},
    ],
    "openai_responses": [
        {"id": "r", "object": "response", "model": "m", "status": "completed", "service_tier": "flex",
         "created_at": 1, "tools": [{"type": "web_search"}],
         "output": [
             {"type": "reasoning", "id": "rs_1", "encrypted_content": "enc",
              "summary": [{"type": "summary_text", "text": "one"}, {"type": "summary_text", "text": "two"}]},
             {"type": "message", "id": "m0", "role": "assistant", "phase": "commentary",
              "content": [{"type": "output_text", "text": "let me", "annotations": []}]},
             {"type": "message", "id": "m00", "role": "assistant", "phase": "final_answer",
              "content": [{"type": "refusal", "refusal": "no"}]},
             {"type": "reasoning", "id": "rs_2", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}]},
             {"type": "web_search_call", "id": "ws", "status": "completed", "action": {"type": "search"}},
             {"type": "message", "id": "m1", "role": "assistant", "status": "completed", "phase": "final_answer",
              "content": [{"type": "output_text", "text": "hi", "annotations": [RESP_CITE],
                           "logprobs": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}]},
                          {"type": "output_text", "text": " there", "annotations": []}]},
             {"type": "function_call", "id": "fc1", "call_id": "c1", "name": "f", "arguments": "{}"},
             {"type": "function_call", "id": "fc2", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
             {"type": "custom_tool_call", "id": "ct", "call_id": "c2", "name": "g", "input": "x"},
         ],
         "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                   "output_tokens_details": {"reasoning_tokens": 1}}},
    ],
    "anthropic_messages": [
        {"id": "msg", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
         "content": [{"type": "text", "text": "hi", "citations": [
             {"type": "web_search_result_location", "url": "https://x.invalid/", "title": "X", "cited_text": "h",
              "encrypted_index": "e"}]},
             {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {"query": "q"}},
             {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
             {"type": "redacted_thinking", "data": "d"}, {"type": "text", "text": " there"}],
         "usage": {"input_tokens": 3, "output_tokens": 2, "server_tool_use": {"web_search_requests": 1},
                   "service_tier": "standard"}},
    ],
    "gemini": [
        {"candidates": [{"index": 0, "finishReason": "STOP", "finishMessage": "done", "avgLogprobs": -0.1,
                         "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}],
                         "citationMetadata": {"citations": [{"startIndex": 0, "endIndex": 2, "uri": "https://x.invalid/"}]},
                         "groundingMetadata": {"webSearchQueries": ["q"], "groundingChunks": [
                             {"web": {"uri": "https://x.invalid/", "title": "X"}}], "groundingSupports": [
                             {"segment": {"startIndex": 0, "endIndex": 2, "text": "hi"}, "groundingChunkIndices": [0]}]},
                         "content": {"role": "model", "parts": [
                             {"text": "t", "thought": True}, {"text": "hi", "thoughtSignature": "c2ln"},
                             {"functionCall": {"name": "f", "args": {"a": 1}}},
                             {"functionCall": {"name": "f", "args": {"a": 2}}}]}}],
         "promptFeedback": {"safetyRatings": []},
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 6,
                           "toolUsePromptTokenCount": 1, "thoughtsTokenCount": 1},
         "modelVersion": "m", "responseId": "r"},
        {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
         "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}, "modelVersion": "m"},
    ],
}


def _chat(delta: Any = None, finish: Any = None, **top: Any) -> Dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "service_tier": "default",
            "system_fingerprint": "fp_1", "choices": choices, **top}


def _resp(kind: str, **fields: Any) -> Tuple[str, Dict[str, Any]]:
    return kind, {"type": kind, **fields}


MSG2 = {"type": "message", "id": "m2", "role": "assistant", "phase": "final_answer",
        "content": [{"type": "output_text", "text": "hé", "annotations": [RESP_CITE]}]}
RS = {"type": "reasoning", "id": "rs_1", "summary": []}

STREAM_SEEDS: Dict[str, List[List[Tuple[Any, Any]]]] = {
    "openai_chat": [
        [(None, {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
         (None, _chat({"role": "assistant", "content": "", "reasoning_content": "t"})),
         (None, _chat({"content": "hé"}, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})),
         (None, {**_chat({"content": " there"}), "choices": [
             {"index": 0, "delta": {"content": " there"}, "logprobs": LOGPROBS, "finish_reason": None}]}),
         (None, _chat({"annotations": [CITE]})),
         (None, _chat({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                       "function": {"name": "f", "arguments": ""}},
                                      {"index": 1, "id": "c1", "type": "function",
                                       "function": {"name": "f", "arguments": "{}"}}]})),
         (None, {**_chat({}, "stop"), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                                   "usage": USAGE_OAI}]}),
         (None, _chat(usage=USAGE_OAI)),
         (None, "[DONE]")],
        [(None, _chat({"role": "assistant", "content": "\"a"})), (None, _chat({"content": "\""})),
         (None, _chat({}, "stop")), (None, "[DONE]")],
        [(None, _chat({"role": "assistant", "content": "h"})),
         (None, _chat({}, "insufficient_system_resource")), (None, "[DONE]")],
        [(None, _chat({"role": "assistant", "content": "h"})),
         (None, {**_chat({}, "error"), "choices": [{"index": 0, "delta": {}, "finish_reason": "error",
                                                    "error": {"message": "ctx", "code": "context_length_exceeded",
                                                              "param": "messages"}}]}),
         (None, "[DONE]")],
    ],
    "openai_responses": [
        [_resp("response.created", response={"id": "r", "model": "m", "status": "in_progress", "output": [],
                                             "tools": [{"type": "web_search"}]}),
         _resp("response.output_item.added", output_index=0, item=RS),
         _resp("response.reasoning_summary_part.added", output_index=0, item_id="rs_1", summary_index=0,
               part={"type": "summary_text", "text": ""}),
         _resp("response.reasoning_summary_text.delta", output_index=0, item_id="rs_1", summary_index=0, delta="one"),
         _resp("response.reasoning_summary_part.added", output_index=0, item_id="rs_1", summary_index=1,
               part={"type": "summary_text", "text": ""}),
         _resp("response.reasoning_summary_text.delta", output_index=0, item_id="rs_1", summary_index=1, delta="two"),
         _resp("response.output_item.done", output_index=0, item={**RS, "encrypted_content": "enc", "summary": [
             {"type": "summary_text", "text": "one"}, {"type": "summary_text", "text": "two"}]}),
         _resp("response.output_item.added", output_index=1, item={**MSG2, "content": []}),
         _resp("response.content_part.added", output_index=1, item_id="m2", content_index=0,
               part={"type": "output_text", "text": "", "annotations": []}),
         _resp("response.output_text.delta", output_index=1, item_id="m2", content_index=0, delta="hé"),
         _resp("response.output_text.annotation.added", output_index=1, item_id="m2", content_index=0,
               annotation_index=0, annotation=RESP_CITE),
         _resp("response.output_text.done", output_index=1, item_id="m2", content_index=0, text="hé"),
         _resp("response.output_item.done", output_index=1, item=MSG2),
         # done without added: the done item is the whole of it
         _resp("response.output_item.done", output_index=2, item={"type": "function_call", "id": "fc", "call_id": "c1",
                                                                  "name": "f", "arguments": "{}"}),
         _resp("response.output_item.done", output_index=3, item={"type": "reasoning", "id": "rs_2", "summary": [
             {"type": "summary_text", "text": "x"}]}),
         _resp("response.completed", response={
             "id": "r", "model": "m", "status": "completed", "service_tier": "priority",
             "output": [RS, MSG2, {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": "{}"},
                        {"type": "reasoning", "id": "rs_2", "summary": []},
                        # items only the terminal event carries
                        {"type": "message", "id": "m9", "role": "assistant", "phase": "final_answer", "content": [
                            {"type": "output_text", "text": "late", "annotations": [RESP_CITE]}]},
                        {"type": "function_call", "id": "fc9", "call_id": "c1", "name": "f", "arguments": "{}"},
                        {"type": "reasoning", "id": "rs_9", "encrypted_content": "e", "summary": [
                            {"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]},
                        {"type": "web_search_call", "id": "ws9", "status": "completed"}],
             "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}})],
        [_resp("response.created", response={"id": "r", "model": "m", "status": "in_progress", "output": []}),
         _resp("response.output_item.added", output_index=0, item={"type": "reasoning", "id": "rs_3", "summary": []}),
         _resp("response.reasoning_text.delta", output_index=0, item_id="rs_3", content_index=0, delta="think"),
         _resp("response.output_item.done", output_index=0, item={"type": "reasoning", "id": "rs_3", "summary": [],
                                                                  "content": [{"type": "reasoning_text", "text": "think"}]}),
         _resp("response.output_item.added", output_index=1, item={"type": "message", "id": "m3", "phase": "commentary",
                                                                   "content": []}),
         _resp("response.content_part.added", output_index=1, item_id="m3", content_index=0,
               part={"type": "output_text", "text": ""}),
         _resp("response.output_text.delta", output_index=1, item_id="m3", content_index=0, delta="a"),
         _resp("response.content_part.added", output_index=1, item_id="m3", content_index=1,
               part={"type": "output_text", "text": ""}),
         _resp("response.output_text.delta", output_index=1, item_id="m3", content_index=1, delta="b"),
         _resp("response.output_text.annotation.added", output_index=1, item_id="m3", content_index=0,
               annotation_index=0, annotation=RESP_CITE),
         _resp("response.content_part.added", output_index=1, item_id="m3", content_index=2,
               part={"type": "refusal", "refusal": ""}),
         _resp("response.refusal.delta", output_index=1, item_id="m3", content_index=2, delta="no"),
         _resp("response.output_text.annotation.added", output_index=1, item_id="m3", content_index=2,
               annotation_index=0, annotation=RESP_CITE),
         _resp("response.output_item.done", output_index=1, item={"type": "message", "id": "m3", "phase": "commentary",
                                                                  "content": [{"type": "output_text", "text": "a"},
                                                                              {"type": "output_text", "text": "b"},
                                                                              {"type": "refusal", "refusal": "no"}]}),
         _resp("response.completed", response={
             "id": "r", "model": "m", "status": "completed", "output": [
                 {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "a"}]},
                 {"type": "message", "id": "m9", "phase": "final_answer", "content": [
                     {"type": "output_text", "text": "late", "annotations": [RESP_CITE]},
                     {"type": "refusal", "refusal": "no"}]},
                 {"type": "custom_tool_call", "id": "ct", "call_id": "c2", "name": "g", "input": "x"}]})],
    ],
    "anthropic_messages": [
        [("message_start", {"type": "message_start", "message": {
            "id": "msg", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1}}}),
         ("content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "thinking", "thinking": ""}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "thinking_delta", "thinking": "t"}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "signature_delta", "signature": "s"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 0}),
         ("content_block_start", {"type": "content_block_start", "index": 1,
                                  "content_block": {"type": "text", "text": "hi"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 1}),
         ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
             "type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                  "delta": {"type": "input_json_delta", "partial_json": "{\"query\":\"q\"}"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 2}),
         ("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {
             "type": "web_search_tool_result", "tool_use_id": "srv", "content": [
                 {"type": "web_search_result", "url": "https://x.invalid/", "title": "X", "encrypted_content": "e"}]}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 3}),
         ("content_block_start", {"type": "content_block_start", "index": 4,
                                  "content_block": {"type": "text", "text": "", "citations": []}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 4,
                                  "delta": {"type": "citations_delta", "citation": {
                                      "type": "web_search_result_location", "url": "https://x.invalid/",
                                      "title": "X", "cited_text": "h", "encrypted_index": "e"}}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 4,
                                  "delta": {"type": "text_delta", "text": "there"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 4}),
         ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "pause_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 2, "server_tool_use": {"web_search_requests": 1}}}),
         ("message_stop", {"type": "message_stop"})],
        [("message_start", {"type": "message_start", "message": {
            "id": "msg", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1}}}),
         ("content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "citations_delta", "citation": {
                                      "type": "web_search_result_location", "url": "https://x.invalid/",
                                      "title": "X", "cited_text": "h", "encrypted_index": "e"}}}),
         ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "hé"}}),
         ("content_block_stop", {"type": "content_block_stop", "index": 0}),
         ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy",
                                               "details": {"error_code": "thread_not_found"}},
                    "request_id": "req_1"})],
    ],
    "gemini": [
        [(None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "t", "thought": True}]},
                                 "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH",
                                                    "probability": "NEGLIGIBLE"}]}],
                 "promptFeedback": {"safetyRatings": []}, "modelVersion": "m", "responseId": "r"}),
         (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "hé"}]},
                                 "citationMetadata": {"citations": [{"startIndex": 0, "endIndex": 1,
                                                                     "uri": "https://x.invalid/"}]},
                                 "avgLogprobs": -0.1}]}),
         (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
             {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"},
             {"functionCall": {"name": "f", "args": {"a": 2}}}]},
             "citationMetadata": {"citations": [{"startIndex": 1, "endIndex": 2, "uri": "https://y.invalid/"}]}}]}),
         (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": ""}]},
                                 "finishReason": "STOP", "finishMessage": "done",
                                 "groundingMetadata": {"webSearchQueries": ["q"], "groundingChunks": [
                                     {"web": {"uri": "https://x.invalid/", "title": "X"}}]}}],
                 "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
                 "modelVersion": "m"})],
        [(None, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                 "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}, "modelVersion": "m"})],
        [(None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "\"a\""}]},
                                 "finishReason": "RECITATION", "citationMetadata": {"citations": []}}]})],
    ],
}

# Error bodies of each wire, at the statuses session 10 classifies anew (402, 429, 529, thread details).
ERROR_SEEDS: Dict[str, Any] = {
    "openai_chat": {"error": {"message": "no credit", "type": "insufficient_quota", "code": "insufficient_quota",
                              "param": None, "metadata": {"reasons": ["x"], "flagged_input": "y"}}},
    "openai_responses": {"error": {"message": "This model's maximum context length is 8192 tokens",
                                   "type": "invalid_request_error", "code": "context_length_exceeded",
                                   "param": "input"}},
    "anthropic_messages": {"type": "error", "error": {"type": "billing_error", "message": "no credit",
                                                      "details": {"error_code": "thread_not_found"}},
                           "request_id": "req_1"},
    "gemini": [{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                          "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}}],
}
ERROR_STATUSES = (400, 401, 402, 403, 404, 413, 422, 429, 500, 503, 529)

# --- every client encoder, with prompts that take the encoders' optional paths ---------------


def _client_prompts(stream: bool) -> List[Tuple[str, Any, Prompt]]:
    """(wire, client codec, prompt) for each wire: Chat showing reasoning, Anthropic with thinking, Gemini with
    thoughts and a text/x.enum variant, Gemini's JSON-array stream too."""
    seeds = copy.deepcopy(CLIENT_SEEDS)
    seeds["gemini"]["generationConfig"]["thinkingConfig"]["includeThoughts"] = True
    enum = copy.deepcopy(seeds["gemini"])
    enum["generationConfig"].update(responseMimeType="text/x.enum", responseSchema={"type": "STRING", "enum": ["a"]})
    legacy = {k: v for k, v in seeds["openai_chat"].items() if k not in ("tools", "tool_choice")}
    legacy["functions"] = [t["function"] for t in seeds["openai_chat"]["tools"]]
    codecs: List[Tuple[str, Any, Any]] = [
        ("openai_chat", ChatClientCodec("reasoning_content"), seeds["openai_chat"]),
        ("openai_chat", client_codecs()["openai_chat"], legacy),
        ("openai_responses", client_codecs()["openai_responses"], seeds["openai_responses"]),
        ("anthropic_messages", MessagesClientCodec({}, "req_gw"), seeds["anthropic_messages"]),
        ("gemini", GeminiClientCodec("m", stream, sse=True), seeds["gemini"]),
        ("gemini", GeminiClientCodec("m", stream, sse=False), enum),
    ]
    out = []
    for wire, codec, body in codecs:
        if wire != "gemini":
            body = {**body, "stream": stream}
        out.append((wire, codec, codec.decode_request(body)))
    return out


PLAIN_CLIENTS = _client_prompts(False)
STREAM_CLIENTS = _client_prompts(True)


def _frames(data: bytes, sse: bool) -> None:
    """Each frame an encoder wrote is JSON (or Chat's [DONE])."""
    if not sse:
        json.loads(data)
        return
    parser = SSEParser(max_line_bytes=1 << 26)
    for ev in parser.feed(data) + parser.finish():
        if ev.data != "[DONE]":
            json.loads(ev.data)


def _error_rendered(err: RouteplaneError) -> None:
    for _wire, codec, _prompt in PLAIN_CLIENTS:
        json.dumps(codec.error_body(err), allow_nan=False)
        status = getattr(codec, "error_status", lambda e: e.status)(err)
        assert 400 <= status <= 599, status


def _plain_ok(protocol: str, body: Any) -> None:
    try:
        gen = provider_codecs()[protocol].decode_response(body, TARGETS[protocol])
    except RouteplaneError as err:
        assert isinstance(err, UpstreamError) and 400 <= err.status <= 599, (protocol, err)
        _error_rendered(err)
        return
    assert isinstance(gen, Generation)
    for wire, codec, prompt in PLAIN_CLIENTS:
        try:
            out = codec.encode_response(gen, prompt)
        except RouteplaneError as err:  # an encoder may refuse what it cannot say, cleanly
            assert 400 <= err.status <= 599, (protocol, wire, err)
            continue
        json.dumps(out, allow_nan=False)


def _stream_ok(protocol: str, events: List[SSEEvent]) -> None:
    decoder = provider_codecs()[protocol].stream_decoder(TARGETS[protocol])
    encoders = [(wire, codec.stream_encoder(prompt), getattr(codec, "sse", True))
                for wire, codec, prompt in STREAM_CLIENTS]
    written = [bytearray() for _ in encoders]

    def send(parts: List[Any]) -> None:
        for k, (_wire, enc, _sse) in enumerate(encoders):
            for part in parts:
                written[k] += enc.encode(part)

    try:
        for ev in events:
            send(decoder.feed(ev))
        send(decoder.finish())
    except RouteplaneError as err:
        assert isinstance(err, UpstreamError) and 400 <= err.status <= 599, (protocol, err)
        for k, (_wire, enc, _sse) in enumerate(encoders):
            written[k] += enc.error(err)
    else:
        for k, (_wire, enc, _sse) in enumerate(encoders):
            written[k] += enc.close()
    for k, (_wire, _enc, sse) in enumerate(encoders):
        _frames(bytes(written[k]), sse)


def _events(seed: List[Tuple[Any, Any]]) -> List[SSEEvent]:
    return [SSEEvent(d if isinstance(d, str) else json.dumps(d), e) for e, d in seed]


# --- the seeds themselves decode and encode everywhere --------------------------------------

PLAIN_CASES = [(p, i) for p in WIRES for i in range(len(RESPONSE_SEEDS[p]))]
STREAM_CASES = [(p, i) for p in WIRES for i in range(len(STREAM_SEEDS[p]))]


@pytest.mark.parametrize(("protocol", "i"), PLAIN_CASES)
def test_s10_response_seed_encodes_everywhere(protocol: str, i: int) -> None:
    _plain_ok(protocol, copy.deepcopy(RESPONSE_SEEDS[protocol][i]))


@pytest.mark.parametrize(("protocol", "i"), STREAM_CASES)
def test_s10_stream_seed_encodes_everywhere(protocol: str, i: int) -> None:
    _stream_ok(protocol, _events(STREAM_SEEDS[protocol][i]))


# --- fuzzed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "i"), PLAIN_CASES)
def test_s10_mutated_response_decodes_and_encodes(protocol: str, i: int) -> None:
    @FUZZ
    @given(mutated(RESPONSE_SEEDS[protocol][i]))
    def check(body: Any) -> None:
        _plain_ok(protocol, body)

    check()


@pytest.mark.parametrize(("protocol", "i"), STREAM_CASES)
def test_s10_mutated_stream_decodes_and_encodes(protocol: str, i: int) -> None:
    @FUZZ
    @given(hostile_streams(STREAM_SEEDS[protocol][i]))
    def check(events: List[SSEEvent]) -> None:
        _stream_ok(protocol, events)

    check()


@pytest.mark.parametrize("protocol", WIRES)
def test_s10_error_bodies_decode_to_an_upstream_error(protocol: str) -> None:
    @FUZZ
    @given(st.sampled_from(ERROR_STATUSES), st.one_of(mutated(ERROR_SEEDS[protocol]).map(json.dumps),
                                                      HOSTILE.map(json.dumps), st.binary(max_size=40)))
    def check(status: int, body: Any) -> None:
        raw = body if isinstance(body, bytes) else body.encode()
        err = provider_codecs()[protocol].decode_error(status, raw, {}, TARGETS[protocol])
        assert isinstance(err, UpstreamError) and 400 <= err.status <= 599, (protocol, err)
        _error_rendered(err)

    check()


# --- exhaustive: every field of every seed, once each, replaced by a value of another type or deleted -----

# "[[[...": a string field (tool arguments, a signature) that a codec parses as JSON, nested past the recursion limit.
WRONG = (None, True, 0, -1, 2**64, 1.5, "", "x", "[" * 3000, [], [{}], {}, {"a": []})
DELETE = object()
HUNT = "S10_FUZZ_EXAMPLES" in os.environ  # a hunt tries every value at every field; the committed run, three


def _points(value: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_points(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_points(v, prefix + (i,)))
    return out


def _replaced(value: Any, path: Tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if new is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(new)
    return out


def _variants(value: Any) -> List[Any]:
    """`value` with one field mistyped or deleted, for each field: with each of WRONG in a hunt, else with two
    of them in turn (all are used, over the fields) and deleted."""
    out = []
    for n, path in enumerate(_points(value)):
        news = WRONG + (DELETE,) if HUNT else (WRONG[n % len(WRONG)], WRONG[(n + 5) % len(WRONG)], DELETE)
        out.extend(_replaced(value, path, new) for new in news)
    return out


@pytest.mark.parametrize(("protocol", "i"), PLAIN_CASES)
def test_s10_every_response_field_mistyped(protocol: str, i: int) -> None:
    for body in _variants(RESPONSE_SEEDS[protocol][i]):
        _plain_ok(protocol, body)


@pytest.mark.parametrize(("protocol", "i"), STREAM_CASES)
def test_s10_every_stream_field_mistyped(protocol: str, i: int) -> None:
    seed = STREAM_SEEDS[protocol][i]
    for k, (name, data) in enumerate(seed):
        if isinstance(data, str):
            continue
        for variant in _variants(data):
            _stream_ok(protocol, _events(seed[:k] + [(name, variant)] + seed[k + 1:]))


@st.composite
def confused(draw: Any, seed: List[Tuple[Any, Any]]) -> List[SSEEvent]:
    """The seed stream with 1-4 fields, in any of its events, given a value of another type (or deleted),
    and maybe an event repeated or dropped: what a half-compatible server's stream looks like."""
    events = [(e, copy.deepcopy(d)) for e, d in seed]
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, len(events) - 1))
        name, data = events[k]
        points = _points(data) if not isinstance(data, str) else []
        if points:
            events[k] = (name, _replaced(data, draw(st.sampled_from(points)), draw(st.sampled_from(WRONG + (DELETE,)))))
    edit = draw(st.integers(0, 3))
    if edit == 1:
        k = draw(st.integers(0, len(events) - 1))
        events.insert(draw(st.integers(0, len(events))), events[k])
    elif edit == 2:
        del events[draw(st.integers(0, len(events) - 1))]
    return _events(events)


@pytest.mark.parametrize(("protocol", "i"), STREAM_CASES)
def test_s10_confused_stream_decodes_and_encodes(protocol: str, i: int) -> None:
    @FUZZ
    @given(confused(STREAM_SEEDS[protocol][i]))
    def check(events: List[SSEEvent]) -> None:
        _stream_ok(protocol, events)

    check()


@pytest.mark.parametrize(("protocol", "i"), PLAIN_CASES)
def test_s10_confused_response_decodes_and_encodes(protocol: str, i: int) -> None:
    @FUZZ
    @given(confused([(None, RESPONSE_SEEDS[protocol][i])]))
    def check(events: List[SSEEvent]) -> None:
        _plain_ok(protocol, json.loads(events[0].data) if events else None)

    check()


# Keys that tie a stream's events together (which item, block or call an event is about): the collisions and
# out-of-order events a state machine must survive come from giving them each other's values.
LINKS = ("output_index", "content_index", "summary_index", "item_id", "id", "index", "call_id", "annotation_index")
LINK_VALUES = (0, 1, 2, "m2", "rs_1", "fc", "c1", None)


def _relink(draw: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (draw(st.sampled_from(LINK_VALUES)) if k in LINKS and draw(st.integers(0, 3)) == 0
                    else _relink(draw, v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_relink(draw, v) for v in value]
    return value


@st.composite
def mixed(draw: Any, protocol: str) -> List[SSEEvent]:
    """Events of all the wire's seed streams, in any order and number, with their links sometimes crossed."""
    pool = [ev for seed in STREAM_SEEDS[protocol] for ev in seed]
    events = draw(st.lists(st.sampled_from(pool), max_size=24))
    return _events([(name, data if isinstance(data, str) else _relink(draw, data)) for name, data in events])


@pytest.mark.parametrize("protocol", WIRES)
def test_s10_mixed_stream_decodes_and_encodes(protocol: str) -> None:
    @FUZZ
    @given(mixed(protocol))
    def check(events: List[SSEEvent]) -> None:
        _stream_ok(protocol, events)

    check()


# --- pinned: what the hunt found. A JSON text nested past the recursion limit ("[[[[..."), which json.loads
# refuses with a RecursionError (not a ValueError), in a field a codec parses: an upstream's error body, a
# model's tool arguments, a client's tool result, history arguments or carried signature. Each was a 500. ---

DEEP = "[" * 3000


@pytest.mark.parametrize("protocol", WIRES)
@pytest.mark.parametrize("status", [400, 429, 529])
def test_deeply_nested_upstream_error_body_is_an_upstream_error(protocol: str, status: int) -> None:
    err = provider_codecs()[protocol].decode_error(status, DEEP.encode(), {}, TARGETS[protocol])
    assert isinstance(err, UpstreamError) and err.upstream_status == status
    _error_rendered(err)


def _chat_call_answer(arguments: str) -> Dict[str, Any]:
    return {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]}}]}


def test_deeply_nested_tool_arguments_reach_every_client_plain() -> None:
    gen = provider_codecs()["openai_chat"].decode_response(_chat_call_answer(DEEP), TARGETS["openai_chat"])
    for wire, codec, prompt in PLAIN_CLIENTS:
        out = json.dumps(codec.encode_response(gen, prompt))
        assert "[[[" in out, wire  # kept as the model sent it (Anthropic's and Gemini's {"_raw": ...})


def test_deeply_nested_tool_arguments_reach_every_client_streamed() -> None:
    _stream_ok("openai_chat", _events([
        (None, _chat({"role": "assistant", "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                           "function": {"name": "f", "arguments": ""}}]})),
        (None, _chat({"tool_calls": [{"index": 0, "function": {"arguments": DEEP}}]})),
        (None, _chat({"content": "after"})),  # text while the call is open: encoders check if it is complete
        (None, _chat({}, "tool_calls")), (None, "[DONE]")]))


def test_deeply_nested_custom_tool_input_is_kept_as_sent() -> None:
    from routeplane.protocols.custom_tools import custom_input

    assert custom_input(DEEP) == DEEP


def _chat_history(**change: Any) -> Prompt:
    body = copy.deepcopy(CLIENT_SEEDS["openai_chat"])
    if "arguments" in change:
        body["messages"][2]["tool_calls"][0]["function"]["arguments"] = change["arguments"]
    if "result" in change:
        body["messages"][3]["content"] = change["result"]
    return client_codecs()["openai_chat"].decode_request(body)


@pytest.mark.parametrize("change", [{"arguments": DEEP}, {"result": DEEP}], ids=["arguments", "result"])
@pytest.mark.parametrize("upstream", WIRES)
def test_deeply_nested_history_json_is_sent_or_refused_with_a_400(upstream: str, change: Dict[str, str]) -> None:
    prompt = _chat_history(**change)
    try:
        out = provider_codecs()[upstream].encode_request(prompt, TARGETS[upstream], False)
    except RouteplaneError as err:
        assert err.status == 400, err
        return
    assert "[[[" in json.dumps(out)


def test_deeply_nested_carried_signature_is_not_ours() -> None:
    import base64

    forged = base64.b64encode(b"routeplane.carried.v1:" + DEEP.encode()).decode()
    body = copy.deepcopy(CLIENT_SEEDS["anthropic_messages"])
    body["messages"][1]["content"][0]["signature"] = forged
    prompt = client_codecs()["anthropic_messages"].decode_request(body)
    assert prompt.messages[1].parts[0].signature == forged  # an Anthropic signature, as any unknown one


# --- pinned: work that grew with the square of a long answer (an upstream's stream of a megabyte or two held a
# worker's CPU for minutes). The bounds are loose: a tenth of the time before, on a slow machine. ---


def test_gemini_streamed_citations_merge_in_linear_time() -> None:
    """Each chunk's citations were checked against all those kept (`c not in list`): a 1.8 MB stream of
    400 chunks of 200 citations took 129 s of a worker's CPU. Duplicates still go, order stays."""
    import time

    decoder = provider_codecs()["gemini"].stream_decoder(TARGETS["gemini"])
    started = time.perf_counter()
    for i in range(200):
        chunk = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "citationMetadata": {
            "citations": [{"startIndex": i * 200 + j, "uri": "https://x.invalid/"} for j in range(200)]}}]}
        for _ in range(2):  # each chunk twice: its citations are kept once
            decoder.feed(SSEEvent(json.dumps(chunk), None))
    decoder.feed(SSEEvent(json.dumps({"candidates": [{"finishReason": "STOP", "content": {"parts": []}}]}), None))
    finish = decoder.finish()[-1]
    assert time.perf_counter() - started < 5.0
    cited = finish.extras["candidate"]["citationMetadata"]["citations"]
    assert [c["startIndex"] for c in cited] == list(range(200 * 200))


def _same_id_calls(n: int) -> List[SSEEvent]:
    calls = [(None, _chat({"tool_calls": [{"index": i, "id": "c1", "type": "function",
                                           "function": {"name": "f", "arguments": "{}"}}]})) for i in range(n)]
    return _events([(None, _chat({"role": "assistant", "content": None}))] + calls
                   + [(None, _chat({}, "tool_calls")), (None, "[DONE]")])


@pytest.mark.parametrize(("wire", "k", "n"), [("openai_responses", 2, 10_000), ("gemini", 4, 20_000)])
def test_many_parallel_calls_sharing_one_id_encode_in_linear_time(wire: str, k: int, n: int) -> None:
    """Calls in parallel under one id: for each, the Responses encoder looked for a free `call_id` suffix
    from _2 up (10,000 calls, a 1.5 MB stream: 9 s), the Gemini one rescanned the calls it held (20,000: 10 s)."""
    import time

    decoder = provider_codecs()["openai_chat"].stream_decoder(TARGETS["openai_chat"])
    parts = [p for ev in _same_id_calls(n) for p in decoder.feed(ev)] + decoder.finish()
    _wire, codec, prompt = STREAM_CLIENTS[k]
    assert _wire == wire
    encoder = codec.stream_encoder(prompt)
    started = time.perf_counter()
    data = b"".join(encoder.encode(p) for p in parts) + encoder.close()
    assert time.perf_counter() - started < 3.0
    assert b"c1_10000" in data or wire == "gemini"
