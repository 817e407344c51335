"""Images in tool results reach every upstream wire (translation.md §4); they were dropped for Chat, Responses and Gemini."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols import gemini, openai_chat, openai_responses
from routeplane.protocols.anthropic_messages.request import decode_request as decode_anthropic

PNG = "iVBORw0KGgo="
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def prompt(result_content: List[Dict[str, Any]]) -> Any:
    return decode_anthropic({"model": "m", "max_tokens": 50, "messages": [
        {"role": "user", "content": "Screenshot the page."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result_content},
                                     {"type": "text", "text": "What do you see?"}]},
    ]})


def target(protocol: str) -> RoutingTarget:
    return RoutingTarget("p", "up", protocol, base_url="http://up", api_key="k")


@pytest.mark.parametrize("text", ["here", None])
def test_chat_upstream_gets_the_image_in_a_user_message_after_the_tool_messages(text: Any) -> None:
    content = ([{"type": "text", "text": text}] if text else []) + [IMAGE]
    body = openai_chat.PROVIDER.encode_request(prompt(content), target("openai_chat"), stream=False)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "tool", "user", "user"]
    tool, attached = body["messages"][2], body["messages"][3]
    assert tool["tool_call_id"] == "toolu_1" and tool["content"] == (text or "(the result is in the attachments that follow)")
    assert attached["content"][0] == {"type": "text", "text": "Attachments of the tool result toolu_1:"}
    assert attached["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert body["messages"][4]["content"] == "What do you see?"


def test_responses_upstream_gets_the_array_form_of_the_output() -> None:
    body = openai_responses.PROVIDER.encode_request(prompt([{"type": "text", "text": "here"}, IMAGE]),
                                                    target("openai_responses"), stream=False)
    out = [i for i in body["input"] if i.get("type") == "function_call_output"]
    assert out == [{"type": "function_call_output", "call_id": "toolu_1", "output": [
        {"type": "input_text", "text": "here"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}]}]


def test_responses_text_only_output_stays_a_string() -> None:
    body = openai_responses.PROVIDER.encode_request(prompt([{"type": "text", "text": "here"}]),
                                                    target("openai_responses"), stream=False)
    assert [i["output"] for i in body["input"] if i.get("type") == "function_call_output"] == ["here"]


def test_gemini_upstream_gets_the_image_in_the_same_user_turn_after_the_response() -> None:
    body = gemini.PROVIDER.encode_request(prompt([{"type": "text", "text": "here"}, IMAGE]), target("gemini"),
                                          stream=False)
    turn = body["contents"][-1]
    assert turn["role"] == "user"
    assert [next(iter(p)) for p in turn["parts"]] == ["functionResponse", "inlineData", "text"]
    assert turn["parts"][0]["functionResponse"]["response"] == {"output": "here"}
    assert turn["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


def test_gemini_guesses_a_url_images_type_from_its_name() -> None:
    p = decode_anthropic({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "gs://bucket/shot.webp"}}]}]})
    body = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)
    assert body["contents"][0]["parts"][0] == {"fileData": {"mimeType": "image/webp", "fileUri": "gs://bucket/shot.webp"}}


def test_results_sent_as_separate_messages_keep_the_tool_messages_together() -> None:
    """Anthropic lets a client send a turn's results as consecutive user messages: the attachments of
    both go after both tool messages (OpenAI wants every tool message right after the tool_calls)."""
    p = decode_anthropic({"model": "m", "max_tokens": 50, "messages": [
        {"role": "user", "content": "Two shots."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}},
                                          {"type": "tool_use", "id": "toolu_2", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [IMAGE]}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": [IMAGE]}]},
    ]})
    body = openai_chat.PROVIDER.encode_request(p, target("openai_chat"), stream=False)
    assert [(m["role"], m.get("tool_call_id")) for m in body["messages"]] == [
        ("user", None), ("assistant", None), ("tool", "toolu_1"), ("tool", "toolu_2"), ("user", None)]
    texts = [c["text"] for c in body["messages"][-1]["content"] if c["type"] == "text"]
    assert texts == ["Attachments of the tool result toolu_1:", "Attachments of the tool result toolu_2:"]
    g = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)
    assert [next(iter(x)) for x in g["contents"][-1]["parts"]] == [
        "functionResponse", "functionResponse", "inlineData", "inlineData"]


def test_a_document_by_url_is_named_not_sent_as_an_empty_file() -> None:
    doc = {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}
    body = openai_chat.PROVIDER.encode_request(prompt([{"type": "text", "text": "here"}, doc]), target("openai_chat"),
                                               stream=False)
    tool = body["messages"][2]
    assert tool["role"] == "tool" and tool["content"] == "here\n(a document at https://example.com/report.pdf)"
    assert body["messages"][3] == {"role": "user", "content": "What do you see?"}  # nothing to attach
    user = decode_anthropic({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": [doc]}]})
    sent = openai_chat.PROVIDER.encode_request(user, target("openai_chat"), stream=False)["messages"][0]
    assert sent["content"] == [{"type": "text", "text": "(a document at https://example.com/report.pdf)"}]


def test_gemini_gets_a_response_for_every_call_and_none_for_no_call() -> None:
    """translation.md §12.5-6: a missing result becomes an error response, an orphan result user text
    (it was sent as a functionResponse named "function", and the unanswered call went as it was)."""
    p = openai_chat.CLIENT.decode_request({"model": "m", "messages": [
        {"role": "user", "content": "Weather in three cities."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{c}", "type": "function", "function": {"name": "weather", "arguments": f'{{"city":"{c}"}}'}}
            for c in ("a", "b", "c")]},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "stray"},
    ]})
    body = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)
    turn = body["contents"][-1]
    responses = [x["functionResponse"] for x in turn["parts"] if "functionResponse" in x]
    assert sorted(r["id"] for r in responses) == ["call_a", "call_b", "call_c"]
    assert all(r["name"] == "weather" for r in responses)
    assert next(r for r in responses if r["id"] == "call_c")["response"] == {
        "error": "No result was provided for this function call."}
    texts = [x["text"] for x in turn["parts"] if "text" in x]
    assert texts == ['[result of function call call_zzz]: {"output": "stray"}']


def test_a_valid_gemini_history_is_left_as_it_is() -> None:
    body = {"contents": [
        {"role": "user", "parts": [{"text": "Weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "a"}}},
                                    {"functionCall": {"name": "weather", "args": {"city": "b"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
                                   {"functionResponse": {"name": "weather", "response": {"output": "rain"}}}]}]}
    p = gemini.CLIENT.for_path("m", False).decode_request(body)
    sent = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)["contents"]
    assert [[next(iter(x)) for x in t["parts"]] for t in sent] == [
        ["text"], ["functionCall", "functionCall"], ["functionResponse", "functionResponse"]]
    assert [x["functionResponse"]["response"] for x in sent[2]["parts"]] == [{"output": "sunny"}, {"output": "rain"}]


def _gemini_history(contents: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    p = gemini.CLIENT.for_path("m", False).decode_request({"contents": contents})
    return gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)["contents"]


def fc(name: str) -> Dict[str, Any]:
    return {"functionCall": {"name": name, "args": {}}}


def fr(name: str, out: str = "ok") -> Dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"output": out}}}


def test_a_valid_gemini_history_split_over_contents_is_unchanged() -> None:
    """google-genai's streaming chat keeps each chunk of a model turn as its own content. The first
    pairing looked only at the content right after a model content: f's real result was replaced by
    an error and sent as text."""
    contents = [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [fc("f")]},
                {"role": "model", "parts": [fc("g")]}, {"role": "user", "parts": [fr("f"), fr("g")]}]
    assert _gemini_history(contents) == contents
    split_answer = [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [fc("f")]},
                    {"role": "user", "parts": [fr("f")]}, {"role": "user", "parts": [{"text": "and now?"}]}]
    assert _gemini_history(split_answer)[2] == {"role": "user", "parts": [fr("f"), {"text": "and now?"}]}


def test_an_orphan_result_in_the_first_turn_becomes_text_after_the_real_responses() -> None:
    p = openai_chat.CLIENT.decode_request({"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "call_1", "content": "r"}, {"role": "user", "content": "hi"}]})
    sent = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)["contents"]
    assert sent == [{"role": "user", "parts": [{"text": '[result of function call call_1]: {"output": "r"}'},
                                               {"text": "hi"}]}]
    p = openai_chat.CLIENT.decode_request({"model": "m", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_f", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "stray"},
        {"role": "tool", "tool_call_id": "call_f", "content": "ok"}]})
    mixed = gemini.PROVIDER.encode_request(p, target("gemini"), stream=False)["contents"]
    assert [next(iter(x)) for x in mixed[-1]["parts"]] == ["functionResponse", "text"]
