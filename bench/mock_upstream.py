"""The fast mock upstream: nginx answering canned OpenAI and Anthropic JSON and SSE bodies with `return 200`."""

from __future__ import annotations

import json
from typing import Any, Dict, List

CREATED = 1763800000
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def _j(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def openai_json() -> str:
    return _j({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                                             "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
        "usage": USAGE,
    })


def openai_sse(n: int) -> str:
    def chunk(delta: Any, finish: Any = None, usage: Any = None) -> str:
        body: Dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
                                "model": "bench-model",
                                "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                                      "finish_reason": finish}]}
        if usage is not None:
            body["usage"] = usage
        return "data: " + _j(body) + "\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"tok{i} "}) for i in range(n)]
    out += [chunk({}, "stop"), chunk(None, usage={"prompt_tokens": 12, "completion_tokens": n,
                                                  "total_tokens": 12 + n}), "data: [DONE]\n\n"]
    return "".join(out)


def anthropic_json() -> str:
    return _j({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
        "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 9, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    })


def anthropic_sse(n: int) -> str:
    events: List[Dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_bench", "type": "message", "role": "assistant",
                                              "model": "claude-bench", "content": [], "stop_reason": None,
                                              "stop_sequence": None,
                                              "usage": {"input_tokens": 12, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}}
               for i in range(n)]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n}},
               {"type": "message_stop"}]
    return "".join(f"event: {e['type']}\ndata: {_j(e)}\n\n" for e in events)


def canned_files(stream_chunks: int, long_chunks: int) -> Dict[str, str]:
    """File name → body, served by nginx from {dir}/files/."""
    return {
        "json.json": openai_json(),
        "sse.sse": openai_sse(stream_chunks),
        "sselong.sse": openai_sse(long_chunks),
        "anthropic.json": anthropic_json(),
        "anthropic-sse.sse": anthropic_sse(stream_chunks),
        "anthropic-sselong.sse": anthropic_sse(long_chunks),
    }


def nginx_http_body() -> str:
    """The inside of `http {}`; `{port}` and `{dir}` are filled by NginxProcess.

    nginx's static handler refuses POST (405), and a `return 200 '...'` body is
    limited to 4 KiB, so each API path answers 405 internally and error_page
    turns that into a GET of the canned file with status 200: no Lua, no proxy.
    """
    locs = []
    for name in ("json", "sse", "sselong", "anthropic", "anthropic-sse", "anthropic-sselong"):
        ext = "json" if "sse" not in name else "sse"
        locs.append(f"    location /{name}/ {{ error_page 405 =200 /files/{name}.{ext}; return 405; }}\n")
    return ("  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n"
            "  types { application/json json; text/event-stream sse; }\n"
            "  server {\n    listen 127.0.0.1:{port} backlog=4096;\n"
            "    location /files/ { internal; root {dir}; etag off; }\n" + "".join(locs) + "  }\n")
