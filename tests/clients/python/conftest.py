"""Shared fixtures: the gateway's URL and a client for it."""

import os

import ollama
import pytest


@pytest.fixture(scope="session")
def corral_url() -> str:
    return os.environ["CORRAL_URL"]


@pytest.fixture()
def client(corral_url: str) -> ollama.Client:
    return ollama.Client(host=corral_url)
