"""A key over its limit: the official `openai` client raises `RateLimitError`, with OpenAI's
`x-ratelimit-*` headers and `Retry-After` readable from the response."""

import httpx
import openai
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture()
def limited_key(corral_url: str, auth_headers: dict):
    """A fresh API key limited to two requests a minute; removed afterwards."""
    with httpx.Client(base_url=corral_url, headers=auth_headers, timeout=30) as http:
        made = http.post("/api/v1/auths/api_key", json={"name": "limited"})
        made.raise_for_status()
        key, key_id = made.json()["api_key"], made.json()["id"]
        put = http.put(f"/api/v1/limits/key/{key_id}", json={"requests_per_minute": 2})
        assert put.status_code == 200, put.text
        yield key
        http.delete(f"/api/v1/limits/key/{key_id}")
        http.delete(f"/api/v1/auths/api_keys/{key_id}")


def test_a_key_over_its_requests_per_minute_raises_rate_limit_error(corral_url: str, limited_key: str) -> None:
    oai = openai.OpenAI(base_url=f"{corral_url}/v1", api_key=limited_key, max_retries=0, timeout=30)
    first = oai.chat.completions.with_raw_response.create(model="llama3.2", messages=MESSAGES, max_tokens=2)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] in ("0", "1")
    # Two a minute: within a few more (a minute may turn meanwhile), one is refused.
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(5):
            oai.chat.completions.create(model="llama3.2", messages=MESSAGES, max_tokens=2)
    err = refused.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    headers = err.response.headers
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(headers["retry-after"]) <= 60
