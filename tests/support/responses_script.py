"""A scripted OpenAI Responses upstream answer with reasoning: two summary parts, then a short message,
as the final response object and as the event stream OpenAI sends for it."""

from __future__ import annotations

from typing import Any, Dict, List

PARTS = ["**Plan**\n\nLook it up.", "**Answer**\n\nIt is mild."]
REASONING = {"type": "reasoning", "id": "rs_up", "encrypted_content": "gAAAA-ENC",
             "summary": [{"type": "summary_text", "text": t} for t in PARTS]}
MESSAGE = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Mild.", "annotations": []}]}


def final_response(model: str, usage: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": model,
            "output": [REASONING, MESSAGE], "usage": usage}


def reasoning_events(final: Dict[str, Any], split: bool = False) -> List[Any]:
    """OpenAI's stream for `final`. `split`: each summary part in two deltas, with None where the upstream
    pauses after the first one (a gated upstream waits there)."""
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Any] = [{"type": "response.created", "response": shell},
                         {"type": "response.in_progress", "response": shell},
                         {"type": "response.output_item.added", "output_index": 0,
                          "item": {**REASONING, "summary": [], "encrypted_content": None}}]
    for k, text in enumerate(PARTS):
        ids = {"item_id": "rs_up", "output_index": 0, "summary_index": k}
        events.append({"type": "response.reasoning_summary_part.added", **ids,
                       "part": {"type": "summary_text", "text": ""}})
        if split:
            head, tail = text.split("\n\n", 1)
            events.append({"type": "response.reasoning_summary_text.delta", **ids, "delta": head})
            if k == 0:
                events.append(None)
            events.append({"type": "response.reasoning_summary_text.delta", **ids, "delta": "\n\n" + tail})
        else:
            events.append({"type": "response.reasoning_summary_text.delta", **ids, "delta": text})
        events += [{"type": "response.reasoning_summary_text.done", **ids, "text": text},
                   {"type": "response.reasoning_summary_part.done", **ids, "part": {"type": "summary_text", "text": text}}]
    ids = {"item_id": "msg_up", "output_index": 1, "content_index": 0}
    events += [{"type": "response.output_item.done", "output_index": 0, "item": REASONING},
               {"type": "response.output_item.added", "output_index": 1,
                "item": {**MESSAGE, "status": "in_progress", "content": []}},
               {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
               {"type": "response.output_text.delta", **ids, "delta": "Mild."},
               {"type": "response.output_text.done", **ids, "text": "Mild."},
               {"type": "response.content_part.done", **ids, "part": MESSAGE["content"][0]},
               {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE},
               {"type": "response.completed", "response": final}]
    return events
