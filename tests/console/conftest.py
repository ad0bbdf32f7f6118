"""Fixtures for the console suite: a live gateway started by `cargo xtask test`, Debian's
Chromium driven by Playwright, and screenshots written to docs/console/."""

import os
import pathlib
import subprocess

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def url():
    return os.environ["CORRAL_URL"]


@pytest.fixture(scope="session")
def admin():
    return os.environ["CORRAL_ADMIN_EMAIL"], os.environ["CORRAL_ADMIN_PASSWORD"]


@pytest.fixture(scope="session")
def shots():
    root = pathlib.Path(__file__).resolve().parents[2]
    out = pathlib.Path(os.environ.get("CORRAL_SHOTS", root / "docs" / "console"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def sim_b():
    """A second simulator, added through the console and killed by the health test."""
    proc = subprocess.Popen(
        [os.environ["CORRAL_SIM_BIN"], "--host", "127.0.0.1", "--port", "0", "--models", "gemma2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    sim_url = line.rsplit(" ", 1)[-1]
    assert sim_url.startswith("http://"), line
    yield proc, sim_url
    if proc.poll() is None:
        proc.kill()
        proc.wait()
