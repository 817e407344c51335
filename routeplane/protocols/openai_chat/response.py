"""OpenAI Chat Completions responses, usage and errors, both directions."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from ...errors import RouteplaneError, UpstreamError
from ...ids import new_hex
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    ContentPart,
    FinishReason,
    Generation,
    Prompt,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    Usage,
)
from ..base import as_list, bad_upstream, in_band_error, in_band_status, scrub
from .citations import chat_citation
from .request import LEGACY_FUNCTIONS_KEY
from .tools import tool_call

PROTOCOL = "openai_chat"

FINISH_TO_WIRE = {
    FinishReason.STOP: "stop",
    FinishReason.STOP_SEQUENCE: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_CALLS: "tool_calls",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.PAUSE: "stop",
    FinishReason.OTHER: "stop",
}
FINISH_FROM_WIRE = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
    "model_length": FinishReason.LENGTH,  # Mistral: the context window ran out
}
# Mistral and OpenRouter end an answer that failed part way with finish_reason "error" (OpenRouter with
# an `error` beside it): a failure, never an answer that looks complete.
ERROR_FINISH = "error"
# DeepSeek's "insufficient_system_resource": the generation was interrupted for want of inference resources.
# A truncated answer, so an overload to retry (on the next target), not a complete "stop".
RESOURCE_FINISH = "insufficient_system_resource"
FAILED_FINISH = (ERROR_FINISH, RESOURCE_FINISH)
# The answer's own fields a same-wire client gets back, unstreamed or on every chunk of a stream.
KEEP_EXTRAS = ("system_fingerprint", "service_tier")
# Generation.extras: the choice's logprobs and the content they were computed for (a hook that rewrites
# the text, e.g. a redaction, must not leave the original tokens showing). The message's annotations (a
# search model's URL citations) are on its TextPart, like any wire's: a hook that rewrites the text moves
# them with it, as the guardrails' redactions do.
LOGPROBS_KEY, LOGPROBS_TEXT_KEY = "logprobs", "_logprobs_text"


def synthetic_call_id() -> str:
    """An id for a tool call the upstream sent without one (unique: a later turn must not reuse it)."""
    return f"call_{new_hex()[12:]}"

# error kind → OpenAI error `type`
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "invalid_request_error",
    "budget": "insufficient_quota",
    "rate_limit": "rate_limit_exceeded",
    "guardrail": "invalid_request_error",
    "overloaded": "server_error",
    "timeout": "timeout",
    "upstream": "upstream_error",
    "internal": "server_error",
}


def encode_usage(u: Usage) -> Dict[str, Any]:
    prompt = u.total_input
    completion = u.total_output
    details: Dict[str, Any] = {"cached_tokens": u.cache_read_tokens}
    if u.cache_write_tokens:
        details["cache_write_tokens"] = u.cache_write_tokens
    out = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }
    if u.reasoning_known:  # translation.md §9: omitted when the upstream gave no breakdown, never guessed
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def decode_usage(raw: Any) -> Optional[Usage]:
    if not isinstance(raw, dict):
        return None
    prompt = _int(raw.get("prompt_tokens"))
    completion = _int(raw.get("completion_tokens"))
    pd = raw.get("prompt_tokens_details") if isinstance(raw.get("prompt_tokens_details"), dict) else {}
    cd = raw.get("completion_tokens_details") if isinstance(raw.get("completion_tokens_details"), dict) else {}
    # Cache hits in OpenAI's spelling, else DeepSeek's (`prompt_cache_hit_tokens`) or Moonshot's (`cached_tokens`
    # beside the counts): either is part of prompt_tokens, as OpenAI's is, and priced as a cache read.
    cached = _int(pd.get("cached_tokens")) or _int(raw.get("prompt_cache_hit_tokens")) or _int(raw.get("cached_tokens"))
    written = _int(pd.get("cache_write_tokens"))
    reasoning = _int(cd.get("reasoning_tokens"))
    return Usage(
        input_tokens=max(0, prompt - cached - written),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_tokens=max(0, completion - reasoning),
        reasoning_tokens=min(reasoning, completion) if completion else reasoning,
        reported=True,
        # vLLM, Ollama and others give no breakdown even for a reasoning model: no count, not a count of 0.
        reasoning_known=isinstance(cd.get("reasoning_tokens"), int),
        raw=raw,
    )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


# OpenAI's Chat Completions search models (gpt-4o-search-preview, gpt-4o-mini-search-preview,
# gpt-5-search-api, their dated snapshots; "openai/…" through a router) search the web for every request
# and bill a fee per search, but their answer has no count of searches. So each answer of one counts one
# `chat_web_search` (Usage.tool_calls, priced by Prices.per_call): its own kind, apart from a Responses
# `web_search`, because its price per call differs by model and is left for a config to set.
_SEARCH_MODEL = re.compile(r"(?:^|/)gpt-[\w.-]*-search-(?:preview|api)(?:-[\w.-]+)?$")


def search_calls(*models: Any) -> Tuple[Tuple[str, int], ...]:
    """(("chat_web_search", 1),) when any of the names (the answer's model, the target's) is a search model."""
    return (("chat_web_search", 1),) if any(isinstance(m, str) and _SEARCH_MODEL.search(m) for m in models) else ()


def with_search_calls(usage: Usage, *models: Any) -> Usage:
    calls = search_calls(*models)
    return replace(usage, tool_calls=calls) if calls else usage


def encode_response(gen: Generation, prompt: Prompt, reasoning_field: Optional[str] = None) -> Dict[str, Any]:
    text = "".join(p.text for p in gen.parts if isinstance(p, TextPart) and not p.refusal)
    refusal = "".join(p.text for p in gen.parts if isinstance(p, TextPart) and p.refusal)
    calls = [tool_call(p) for p in gen.parts if isinstance(p, ToolCallPart)]
    message: Dict[str, Any] = {
        "role": "assistant",
        "content": text if (text or not (calls or refusal)) else None,
        "refusal": refusal or None,
        "annotations": citations(gen.parts),
    }
    if reasoning_field is not None:  # opted in (server.openai_chat_reasoning): any wire's reasoning text
        reasoning = "".join(p.text for p in gen.parts if isinstance(p, ReasoningPart))
        if reasoning:
            message[reasoning_field] = reasoning
    finish = FINISH_TO_WIRE[gen.finish_reason]
    functions = [c["function"] for c in calls if c["type"] == "function"]
    if functions and legacy_functions(prompt):
        # A client of the legacy `functions` API reads message.function_call (one call a turn).
        message["function_call"] = {"name": functions[0]["name"], "arguments": functions[0]["arguments"]}
        finish = "function_call" if finish == "tool_calls" else finish
    elif calls:
        message["tool_calls"] = calls
    logprobs = None
    if gen.extras_protocol == PROTOCOL and gen.extras.get(LOGPROBS_TEXT_KEY) == _scored_text(gen.parts):
        logprobs = gen.extras.get(LOGPROBS_KEY)
    body: Dict[str, Any] = {
        "id": gen.id or f"chatcmpl-{new_hex()}",
        "object": "chat.completion",
        "created": gen.created or int(time.time()),
        "model": prompt.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
        ],
        "usage": encode_usage(gen.usage),
    }
    if gen.extras_protocol == PROTOCOL:
        body.update({k: v for k, v in gen.extras.items() if k in KEEP_EXTRAS})
    return body


def citations(parts: Any) -> List[Dict[str, Any]]:
    """`message.annotations`: a Chat upstream's as they came (they index the whole content), a Responses
    upstream's URL citations moved to where their part starts in the content; others have no Chat form."""
    out: List[Dict[str, Any]] = []
    base = 0
    for p in parts:
        if isinstance(p, TextPart) and not p.refusal:
            for note in p.annotations:
                cited = chat_citation(note, p.annotations_protocol, base)
                if cited is not None:
                    out.append(cited)
            base += len(p.text)
    return out


def _scored_text(parts: Any) -> List[str]:
    """What logprobs score: the content and the refusal (`logprobs.content`, `logprobs.refusal`)."""
    return ["".join(p.text for p in parts if isinstance(p, TextPart) and p.refusal == refusal) for refusal in (False, True)]


def legacy_functions(prompt: Prompt) -> bool:
    """The client offered legacy `functions`: calls go back as `function_call`, not `tool_calls`."""
    return prompt.extras_protocol == PROTOCOL and bool(prompt.extras.get(LEGACY_FUNCTIONS_KEY))


def error_in_body(err: Any, target: RoutingTarget, mid_stream: bool = False) -> UpstreamError:
    """An `error` object in a 200 answer or a stream chunk, classified by its code or type (or the numeric
    code OpenRouter and others send): a context-length or content-policy error is the request's 400, not a
    server error to retry on the next target."""
    fields = err if isinstance(err, dict) else {}
    message = fields.get("message") if isinstance(fields.get("message"), str) else None
    message = message or (err if isinstance(err, str) else "error in stream")
    code, etype = fields.get("code"), fields.get("type")
    out = in_band_error(in_band_status(code, etype), message, target, mid_stream=mid_stream,
                        code=code if isinstance(code, str) else etype)
    if 400 <= out.status < 500 and out.kind in ("invalid_request", "not_found", "request_too_large"):
        # The request's fault, told in the upstream's words, as for an HTTP error: its `code` and `param`
        # (context_length_exceeded, messages) are what an OpenAI client reads to react.
        own = [fields.get(k) for k in ("code", "param")]
        code_, out.param = (scrub(v, target) if isinstance(v, str) and 0 < len(v) <= 128 else None for v in own)
        out.code = code_ or out.code  # a numeric code (OpenRouter) leaves in_band_error's context_length_exceeded
    return out


def finish_error(choice: Dict[str, Any], target: RoutingTarget, mid_stream: bool = False) -> UpstreamError:
    """The error a choice that ended with finish_reason "error" (or DeepSeek's resource shortage) stands for."""
    if choice.get("finish_reason") == RESOURCE_FINISH:
        return in_band_error(503, "the model's answer was cut short: the provider ran out of resources "
                             f"(finish_reason {RESOURCE_FINISH!r})", target, mid_stream=mid_stream)
    return error_in_body(choice.get("error") or "the model's answer ended with finish_reason 'error'", target,
                         mid_stream=mid_stream)


def decode_response(body: Any, target: RoutingTarget) -> Generation:
    if not isinstance(body, dict):
        raise bad_upstream(target, "the body is not a JSON object")
    if body.get("error") and not body.get("choices"):
        raise error_in_body(body["error"], target)  # an error with a success status (compatible servers)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad_upstream(target, "no choices")
    choice = choices[0]
    if choice.get("finish_reason") in FAILED_FINISH:
        raise finish_error(choice, target)
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise bad_upstream(target, "choice without a message")
    parts: List[ContentPart] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ReasoningPart(reasoning, provider=PROTOCOL))
    content = msg.get("content")
    if isinstance(content, list):  # a compatible server's text parts: one content, as the citations index it
        content = "".join(c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    if isinstance(content, str) and content:
        notes = tuple(a for a in as_list(msg.get("annotations")) if isinstance(a, dict))
        parts.append(TextPart(content, annotations=notes, annotations_protocol=PROTOCOL if notes else None))
    if isinstance(msg.get("refusal"), str) and msg["refusal"]:
        parts.append(TextPart(msg["refusal"], refusal=True))
    for call in as_list(msg.get("tool_calls")):
        if isinstance(call, dict) and call.get("type") == "custom" and isinstance(call.get("custom"), dict):
            custom = call["custom"]
            parts.append(ToolCallPart(str(call.get("id") or synthetic_call_id()), str(custom.get("name") or ""),
                                      custom["input"] if isinstance(custom.get("input"), str) else "", custom=True))
            continue
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise bad_upstream(target, "malformed tool call")
        fn = call["function"]
        parts.append(ToolCallPart(str(call.get("id") or synthetic_call_id()), str(fn.get("name") or ""),
                                  _arguments(fn.get("arguments"))))
    finish = FINISH_FROM_WIRE.get(str(choice.get("finish_reason")), FinishReason.STOP)
    if any(isinstance(p, ToolCallPart) for p in parts) and finish is FinishReason.STOP:
        finish = FinishReason.TOOL_CALLS  # some compatible servers say "stop" after a tool call
    usage = with_search_calls(decode_usage(body.get("usage")) or Usage(reported=False), body.get("model"),
                              target.model)
    extras = {k: body[k] for k in KEEP_EXTRAS if k in body}
    if isinstance(choice.get("logprobs"), dict):
        extras[LOGPROBS_KEY] = choice["logprobs"]
        extras[LOGPROBS_TEXT_KEY] = _scored_text(parts)
    return Generation(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or target.model),
        parts=tuple(parts),
        finish_reason=finish,
        usage=usage,
        created=body.get("created") if isinstance(body.get("created"), int) else int(time.time()),
        extras=extras,
        extras_protocol=PROTOCOL,
    )


# error kind → OpenAI error `code`, where OpenAI's own differs from the kind: clients tell a rate limit
# (retry later) from an exhausted quota (do not) by `code` (openai-chat.md §5).
ERROR_CODES = {"rate_limit": "rate_limit_exceeded", "budget": "insufficient_quota", "invalid_request": None}


def error_body(err: RouteplaneError) -> Dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": ERROR_TYPES.get(err.kind, "invalid_request_error" if err.status < 500 else "server_error"),
            "param": err.param,
            "code": err.code or ERROR_CODES.get(err.kind, err.kind),
        }
    }


def _arguments(raw: Any) -> str:
    """Tool arguments as a JSON string (some compatible servers send an object)."""
    if isinstance(raw, str):
        return raw or "{}"
    return json.dumps(raw) if isinstance(raw, (dict, list)) else "{}"
