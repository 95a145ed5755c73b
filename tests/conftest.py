"""Shared fixtures. Everything runs offline: no Hub, no network beyond 127.0.0.1."""

from __future__ import annotations

import os

import pytest

# The loopback OpenAI-compatible test server and its fixtures (llm_server, llm_backend, ...).
pytest_plugins = ["tests.llm_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# No periodic progress lines in captured output (tests/test_progress_logs.py turns them on where it checks them).
os.environ.setdefault("SYNTH_PROGRESS_INTERVAL", "0")
# The converted embedded model lives in the real user cache: converting it takes ~90 s, once per machine.
os.environ.setdefault(
    "SYNTH_MODEL_CACHE",
    os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synth", "models"),
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep synth's user cache per test session, except the converted embedded model (slow to build)."""
    monkeypatch.setenv("SYNTH_CACHE_DIR", os.environ.get("SYNTH_TEST_CACHE_DIR") or str(tmp_path_factory.getbasetemp() / "synth-cache"))
