"""Gemini `generationConfig`: client fields → GenerationParams / ResponseFormat, and back for a provider."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ...errors import InvalidRequest
from ...language_model.types import GenerationParams, Prompt, ResponseFormat
from ..base import EFFORT_BUDGET, described_schema, effort_for_budget, expect
from .schema import from_gemini_schema, strip_meta

_INT32 = (-(2**31), 2**31 - 1)
# google-genai's ThinkingLevel values.
_LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"})


def camel_keys(d: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        head, *rest = k.split("_")
        out[head + "".join(w[:1].upper() + w[1:] for w in rest)] = v
    return out


def decode_generation(gen: Dict[str, Any]) -> Tuple[GenerationParams, Optional[ResponseFormat], Any]:
    n = integer(gen.get("candidateCount"), "generationConfig.candidateCount")
    if n is not None and n != 1:
        raise InvalidRequest("Only candidateCount=1 is supported by this gateway.",
                             param="generationConfig.candidateCount", code="unsupported_value")
    stops = expect(gen.get("stopSequences"), list, "generationConfig.stopSequences") or []
    if not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("'stopSequences' must be an array of strings.", param="generationConfig.stopSequences")
    thinking = expect(gen.get("thinkingConfig"), dict, "generationConfig.thinkingConfig")
    effort = budget = None
    if thinking is not None:
        thinking = camel_keys(thinking)
        budget = integer(thinking.get("thinkingBudget"), "generationConfig.thinkingConfig.thinkingBudget")
        level = expect(thinking.get("thinkingLevel"), str, "generationConfig.thinkingConfig.thinkingLevel")
        if level and level.upper() not in _LEVELS:
            raise InvalidRequest(f"Invalid value for 'generationConfig.thinkingConfig.thinkingLevel': {level!r} "
                                 f"(expected one of {', '.join(sorted(_LEVELS))}).",
                                 param="generationConfig.thinkingConfig.thinkingLevel", code="invalid_value")
        if level and level.upper() != "THINKING_LEVEL_UNSPECIFIED":
            effort = level.lower()  # an effort every other wire knows (base.EFFORT_BUDGET)
        elif budget == 0:
            effort = "none"
        elif budget == -1:
            effort = "medium"  # dynamic: the model decides; other wires need a size
        elif budget is not None and budget > 0:
            # Wires that only know an effort still hear that thinking was asked for.
            effort = effort_for_budget(budget)
        elif budget is None and thinking.get("includeThoughts") is True:
            effort = "medium"  # Gemini's default, dynamic thinking, to be shown: other wires need a size
        if budget is not None and budget <= 0:
            budget = None  # 0 = off (effort none), -1 = dynamic: no fixed budget
    params = GenerationParams(
        max_tokens=integer(gen.get("maxOutputTokens"), "generationConfig.maxOutputTokens"),
        temperature=_number(gen, "temperature"),
        top_p=_number(gen, "topP"),
        top_k=integer(gen.get("topK"), "generationConfig.topK"),
        stop=tuple(stops),
        seed=integer(gen.get("seed"), "generationConfig.seed"),
        presence_penalty=_number(gen, "presencePenalty"),
        frequency_penalty=_number(gen, "frequencyPenalty"),
        reasoning_effort=effort,
        reasoning_budget=budget,
    )
    rf = None
    mime = expect(gen.get("responseMimeType"), str, "generationConfig.responseMimeType")
    schema = expect(gen.get("responseJsonSchema"), (dict, bool), "generationConfig.responseJsonSchema")
    if schema is None and expect(gen.get("responseSchema"), dict, "generationConfig.responseSchema") is not None:
        schema = from_gemini_schema(gen["responseSchema"])
    if mime == "application/json" or schema is not None:
        rf = ResponseFormat("json_schema", "response", schema) if isinstance(schema, dict) else ResponseFormat("json_object")
    return params, rf, thinking


def same_wire_generation(gen: Dict[str, Any]) -> Dict[str, Any]:
    """generationConfig fields a Gemini upstream gets back as the client sent them: a
    `responseMimeType` other than JSON (`text/x.enum` answers with the bare enum value, not a
    JSON string) and a `responseSchema` (Gemini's own Schema, `propertyOrdering` included, instead
    of its JSON Schema translation; the two fields are mutually exclusive upstream)."""
    kept: Dict[str, Any] = {}
    mime = gen.get("responseMimeType")
    if isinstance(mime, str) and mime not in ("", "application/json", "text/plain"):
        kept["responseMimeType"] = mime
    if isinstance(gen.get("responseSchema"), dict) and gen.get("responseJsonSchema") is None:
        kept["responseSchema"] = gen["responseSchema"]
    return kept


def integer(value: Any, param: str) -> Optional[int]:
    """An integer field as Gemini's JSON mapping reads it: `4` and `4.0` alike (google-genai
    types `top_k` as a float, so its clients send `4.0`); `4.5` is refused, and so is a number
    past int32, the fields' proto type (`1e300` would go on as a 300-digit integer)."""
    if isinstance(value, float) and not isinstance(value, bool):
        if not value.is_integer():
            raise InvalidRequest(f"Invalid value for '{param}': expected an integer, got {value!r}.", param=param,
                                 code="invalid_type")
        value = int(value)
    number = expect(value, int, param)
    if number is not None and not _INT32[0] <= number <= _INT32[1]:
        raise InvalidRequest(f"Invalid value for '{param}': out of range for a 32-bit integer "
                             f"({_INT32[0]} to {_INT32[1]}).", param=param, code="invalid_value")
    return number


def _number(gen: Dict[str, Any], key: str) -> Optional[float]:
    value = expect(gen.get(key), (int, float), f"generationConfig.{key}")
    return None if value is None else float(value)


def encode_generation(prompt: Prompt, gen_extra: Dict[str, Any]) -> Dict[str, Any]:
    p = prompt.params
    gen: Dict[str, Any] = {}
    for key, value in (("maxOutputTokens", p.max_tokens), ("temperature", p.temperature), ("topP", p.top_p),
                       ("topK", p.top_k), ("seed", p.seed), ("presencePenalty", p.presence_penalty),
                       ("frequencyPenalty", p.frequency_penalty)):
        if value is not None:
            gen[key] = value
    if p.stop:
        gen["stopSequences"] = list(p.stop)  # all of them: past Gemini's 5 is the client's 400 (limit_refusal)
    rf = prompt.response_format
    if rf is not None and rf.type != "text":
        gen["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema and "responseSchema" not in gen_extra:
            gen["responseJsonSchema"] = strip_meta(described_schema(rf))
    thinking = dict(gen_extra.pop("thinkingConfig", None) or {})
    if not thinking:
        if p.reasoning_budget is not None:
            thinking = {"thinkingBudget": p.reasoning_budget, "includeThoughts": True}
        elif p.reasoning_effort is not None and p.reasoning_effort in EFFORT_BUDGET:
            budget = EFFORT_BUDGET[p.reasoning_effort]
            thinking = {"thinkingBudget": budget} if budget == 0 else {"thinkingBudget": budget, "includeThoughts": True}
    if thinking:
        gen["thinkingConfig"] = thinking
    gen.update(gen_extra)
    return gen
