"""The official `ollama` Python client against Corral's native API."""

import ollama
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def test_list_shows_the_fleets_models(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert "llama3.2:latest" in names, names


def test_streamed_chat(client: ollama.Client) -> None:
    parts = list(client.chat(model="llama3.2", messages=MESSAGES, stream=True, options={"num_predict": 12}))
    assert len(parts) == 13, [p.model_dump() for p in parts]
    assert all(not p.done for p in parts[:-1])
    assert parts[-1].done and parts[-1].done_reason == "length"
    assert "".join(p.message.content for p in parts).strip()
    assert parts[-1].eval_count == 12


def test_chat(client: ollama.Client) -> None:
    resp = client.chat(model="llama3.2", messages=MESSAGES)
    assert resp.message.role == "assistant"
    assert resp.message.content
    assert resp.done


def test_generate(client: ollama.Client) -> None:
    resp = client.generate(model="llama3.2", prompt="Say hi", options={"num_predict": 5})
    assert resp.response
    assert resp.done_reason == "length"


def test_unknown_model_raises_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=MESSAGES)
    assert err.value.status_code == 404
    assert "not found" in err.value.error
