"""The official `openai` Python client against Corral's OpenAI-compatible API (`/v1`)."""

import json

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_chat(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="llama3.2", messages=MESSAGES, max_tokens=8)
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "llama3.2"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert resp.usage.completion_tokens == 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 8


def test_streamed_chat_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None and usage.completion_tokens == 6


def test_tool_call(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


def test_streamed_tool_call(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = []
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        calls.extend(delta.tool_calls or [])
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls and calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)


def test_json_mode(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(
        model="llama3.2",
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format={"type": "json_object"},
        max_tokens=20,
    )
    json.loads(resp.choices[0].message.content)


def test_reasoning_text_from_a_thinking_model(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="qwen3", messages=MESSAGES, max_tokens=5, reasoning_effort="low")
    extra = resp.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content"), resp.choices[0].message


def test_legacy_completion(oai: openai.OpenAI) -> None:
    resp = oai.completions.create(model="llama3.2", prompt="Say hi", max_tokens=4)
    assert resp.object == "text_completion"
    assert resp.choices[0].text
    assert resp.choices[0].finish_reason == "length"


def test_embeddings_batch(oai: openai.OpenAI) -> None:
    resp = oai.embeddings.create(model="all-minilm", input=["first text", "second text", "third"])
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert all(len(d.embedding) == len(resp.data[0].embedding) for d in resp.data)
    assert resp.usage.prompt_tokens > 0


def test_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "llama3.2:latest" in ids, ids
    one = oai.models.retrieve("llama3.2:latest")
    assert one.id == "llama3.2:latest"


def test_unknown_model_is_a_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "no-such-model" in str(err.value)


def test_a_bad_key_is_an_authentication_error(corral_url: str) -> None:
    bad = openai.OpenAI(base_url=f"{corral_url}/v1", api_key="sk-" + "0" * 32, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_open_webui_alias(corral_url: str, api_key: str) -> None:
    alias = openai.OpenAI(base_url=f"{corral_url}/api", api_key=api_key, max_retries=0)
    resp = alias.chat.completions.create(model="llama3.2", messages=MESSAGES, max_tokens=3)
    assert resp.choices[0].message.content
