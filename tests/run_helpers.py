"""Shared pieces of the runner tests: a scripted loopback model, recipe writing, output comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from synth.llm.testing import LLMTestServer


def scripted_model(body: dict):
    """Replies as a cooperative model would, per prompt kind: MMEvol evolutions and judge verdicts,
    Self-Instruct lists / classifications / instances, and an answer for anything else."""
    from tests.test_mmevol import CURRENT
    from tests.test_mmevol import realistic as mmevol_reply
    from tests.test_self_instruct import ScriptedModel

    text = "".join(
        c if isinstance(c, str) else "".join(p.get("text", "") for p in c if p.get("type") == "text")
        for c in (m.get("content") for m in body.get("messages", []) if m.get("role") == "user")
    )
    if text.startswith("You review visual") or CURRENT.search(text):
        return mmevol_reply(body)
    if not isinstance(body["messages"][-1].get("content"), str):
        return None  # an image-text question: the echo (its own text) is the answer
    return ScriptedModel()(body)


def start_server(latency: float = 0.0) -> LLMTestServer:
    server = LLMTestServer(latency=latency)
    server.script(scripted_model)
    return server.start()


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml", **values) -> Path:
    path = folder / name
    text = textwrap.dedent(text)
    path.write_text(text.format(**values) if values else text, encoding="utf-8")
    return path


def backend_block(server: LLMTestServer, concurrency: int = 4) -> str:
    return (f"backends:\n  default:\n    backend: openai\n    model: test-model\n    base_url: {server.base_url}\n"
            f"    concurrency: {concurrency}\n    max_retries: 2\n    backoff_base: 0.01\n    backoff_max: 0.05\n"
            f"    timeout: 20\n")


def rows(path: Path) -> list[dict]:
    """A stage output's rows (every split of a DatasetDict), images as bytes: for exact comparison."""
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        return [{"split": split, **row} for split in data for row in data[split].with_format("arrow")[:].to_pylist()]
    return data.with_format("arrow")[:].to_pylist()


def stage_hashes(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {name: entry.get("hash") for name, entry in manifest["stages"].items()}


def synth_command(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`synth ARGS` in its own process group (a kill point takes down the run and its workers only)."""
    full_env = {**os.environ, "SYNTH_DEBUG": "", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "synth", *map(str, args)], env=full_env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
