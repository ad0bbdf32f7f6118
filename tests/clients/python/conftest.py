"""Shared fixtures: the gateway's URL and a client for it."""

import os

import ollama
import openai
import pytest


@pytest.fixture(scope="session")
def corral_url() -> str:
    return os.environ["CORRAL_URL"]


@pytest.fixture(scope="session")
def api_key() -> str:
    return os.environ["CORRAL_API_KEY"]


@pytest.fixture(scope="session")
def auth_headers(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture()
def client(corral_url: str, auth_headers: dict) -> ollama.Client:
    return ollama.Client(host=corral_url, headers=auth_headers)


@pytest.fixture()
def oai(corral_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{corral_url}/v1", api_key=api_key, max_retries=0, timeout=30)
