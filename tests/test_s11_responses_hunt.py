"""Session 11 bug hunt on the OpenAI Responses wire with the official openai SDK.

- `text.format`'s json_schema `name` and `strict` were taken whatever their type (a number went to the upstream
  as the schema's name), where the Chat wire's `response_format` refuses them with a 400 naming the field.
- `responses.input_tokens.count` estimated a prompt for another wire at 4 characters a token, where the usage
  the gateway bills for that prompt weighs non-Latin text by its bytes: a Chinese prompt was counted at about a
  quarter of what the same request is then billed.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

import openai
import pytest

from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import Reply, openai_completion
from tests.support.wires import via_wires_config


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        yield pair


SCHEMA: Dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.mark.parametrize("field, value", [("name", 5), ("strict", "yes")])
def test_a_json_schema_format_field_of_the_wrong_type_is_a_400(env: Env, field: str, value: Any) -> None:
    up, client = env
    fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA, field: value}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="via-openai_chat", input="hi", text={"format": fmt})  # type: ignore[arg-type]
    assert err.value.body["param"] == f"text.format.{field}"  # type: ignore[index]
    assert err.value.body["code"] == "invalid_type"  # type: ignore[index]
    assert up.requests == []


def test_a_json_schema_format_still_reaches_a_chat_upstream(env: Env) -> None:
    up, client = env
    up.enqueue(Reply.json(openai_completion('{"city": "Paris"}')))
    fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}
    answer = client.responses.create(model="via-openai_chat", input="hi", text={"format": fmt})  # type: ignore[arg-type]
    assert answer.output_text == '{"city": "Paris"}'
    sent = up.requests[0].json["response_format"]["json_schema"]
    assert (sent["name"], sent["strict"]) == ("weather", True)


PROMPT = "请用中文详细介绍一下北京的历史、文化和美食，以及最适合旅游的季节。" * 10


def test_input_tokens_for_another_wire_count_what_the_request_is_billed(env: Env) -> None:
    """The same Chinese prompt: counted by input_tokens, then answered by a Chat upstream that reports no
    usage (the gateway's estimate is what it bills and shows): the two agree."""
    up, client = env
    raw = client.responses.input_tokens.with_raw_response.count(model="via-openai_chat", input=PROMPT)
    assert raw.headers["x-routeplane-estimate"] == "true"
    counted = raw.parse().input_tokens

    body = openai_completion("好的")
    del body["usage"]
    up.enqueue(Reply.json(body))
    answer = client.responses.create(model="via-openai_chat", input=PROMPT)
    assert answer.usage is not None
    assert counted == answer.usage.input_tokens
    assert counted > len(PROMPT) // 4 * 2  # 4 characters a token said a quarter of it
