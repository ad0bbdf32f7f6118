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


def test_embed(client: ollama.Client) -> None:
    resp = client.embed(model="all-minilm", input=["first text", "second text"])
    assert len(resp.embeddings) == 2
    assert abs(sum(x * x for x in resp.embeddings[0]) - 1.0) < 1e-6


def test_show(client: ollama.Client) -> None:
    resp = client.show("llama3.2")
    assert resp.details.family == "llama"
    assert "completion" in (resp.capabilities or [])


def test_ps_lists_a_model_after_use(client: ollama.Client) -> None:
    client.generate(model="qwen3", prompt="warm up", options={"num_predict": 1})
    names = [m.model for m in client.ps().models]
    assert "qwen3:latest" in names, names


def test_pull_with_progress_copy_and_delete(client: ollama.Client) -> None:
    progress = list(client.pull("mistral", stream=True))
    assert progress[0].status == "pulling manifest"
    assert any(p.completed for p in progress)
    assert progress[-1].status == "success"
    assert "mistral:latest" in [m.model for m in client.list().models]
    assert client.copy("mistral", "mistral-copy").status == "success"
    assert "mistral-copy:latest" in [m.model for m in client.list().models]
    assert client.delete("mistral-copy").status == "success"
    assert "mistral-copy:latest" not in [m.model for m in client.list().models]


def test_open_webui_mount_works_as_a_host(corral_url: str, auth_headers: dict) -> None:
    owui = ollama.Client(host=f"{corral_url}/ollama", headers=auth_headers)
    assert "llama3.2:latest" in [m.model for m in owui.list().models]
    parts = list(owui.chat(model="llama3.2", messages=MESSAGES, stream=True, options={"num_predict": 3}))
    assert parts[-1].done


def test_bad_request_surfaces_as_a_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="no-such-model", input="x")
    assert err.value.status_code == 404


def test_no_key_is_refused_with_401(corral_url: str) -> None:
    anonymous = ollama.Client(host=corral_url)
    with pytest.raises(ollama.ResponseError) as err:
        anonymous.list()
    assert err.value.status_code == 401
    assert "Not authenticated" in err.value.error


def test_a_wrong_key_is_refused_with_401(corral_url: str) -> None:
    wrong = ollama.Client(host=corral_url, headers={"Authorization": "Bearer sk-" + "0" * 32})
    with pytest.raises(ollama.ResponseError) as err:
        wrong.chat(model="llama3.2", messages=MESSAGES)
    assert err.value.status_code == 401
