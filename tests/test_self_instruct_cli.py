"""`synth self-instruct` end to end against the loopback OpenAI-compatible test server."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from synth.cli import app
from synth.io import read_dataset
from tests.test_self_instruct import ScriptedModel


def test_cli_end_to_end_then_rerun_from_cache(llm_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script(ScriptedModel(noise=["Draw a map of your street.", "Hi."]))
    out = tmp_path / "si"
    args = [
        "self-instruct",
        "--out",
        str(out),
        "--backend",
        "openai",
        "--base-url",
        llm_server.base_url,
        "--model",
        "test-model",
        "--count",
        "6",
        "--concurrency",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Self-Instruct" in result.output and "unsupported_keyword 1" in result.output
    assert "wrote 8 records" in result.output  # 6 tasks; the 2 classification ones have 2 instances each
    assert "presence penalty not applied" not in result.output
    dataset = read_dataset(out)
    assert len(dataset) == 8
    # The published sampling settings reach the server.
    lists = [b for b in llm_server.requests if "Continue the list with" in b["messages"][-1]["content"]]
    assert lists and all((b["temperature"], b["top_p"], b["presence_penalty"]) == (0.7, 0.5, 2.0) for b in lists)
    meta = [json.loads(m) for m in dataset["meta"]]
    assert {m["operator"] for m in meta} == {"self-instruct"} and {m["model"] for m in meta} == {"test-model"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("si")) == ["si"]  # sidecars inside
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["too_short", "unsupported_keyword"]
    sent = llm_server.request_count

    # Same command again: refuses to overwrite, then with --overwrite every request is a cache hit.
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0
    again = CliRunner().invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert llm_server.request_count == sent
    assert read_dataset(out)["messages"] == dataset["messages"]

    # Other values are other requests (the cache key holds them), and they reach the server too.
    other = CliRunner().invoke(app, [*args, "--overwrite", "--top-p", "0.9", "--presence-penalty", "0", "--max-instances", "1"])
    assert other.exit_code == 0, other.output
    assert "wrote 6 records" in other.output
    lists = [b for b in llm_server.requests[sent:] if "Continue the list with" in b["messages"][-1]["content"]]
    assert lists and all((b["top_p"], b["presence_penalty"]) == (0.9, 0) for b in lists)


def test_cli_bad_seed_file_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_DEBUG", "0")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "x"}\n')
    result = CliRunner().invoke(
        app,
        [
            "self-instruct",
            "--out",
            str(tmp_path / "o"),
            "--seeds",
            str(seeds),
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9",
            "--model",
            "m",
        ],
    )
    assert result.exit_code == 1
    assert f"{seeds}:1" in result.output and "instances" in result.output
    assert not (tmp_path / "o").exists()
