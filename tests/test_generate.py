"""Response generation: the stage's prompts and parsing, and `synth generate` end to end against the
loopback OpenAI-compatible test server (a fixture, not a model) and a tiny random local model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.data import open_source
from synth.generate.responses import ResponseGenerator, ResponsesConfig, sft_records
from synth.io import read_dataset
from synth.llm.base import Backend, Completion
from synth.records import content_id, load_meta

pytest_plugins = ["tests.llm_fixtures"]

runner = CliRunner()


class _NoBackend(Backend):
    """format_input/format_output need no model; this one refuses to be called."""

    model_name = "no-model"

    async def acomplete(self, requests, progress=None):
        raise AssertionError("not called")


def record(*turns, meta=None, images=None):
    messages = [{"role": r, "content": c} for r, c in turns]
    row = {"messages": messages, "id": content_id(messages), "meta": meta or {}}
    if images is not None:
        row["images"] = images
    return row


def stage(**config):
    return ResponseGenerator(_NoBackend(), ResponsesConfig(**config))


# ---------------------------------------------------------------- format_input / format_output


def test_format_input_builds_the_request():
    s = stage(system="Be brief.", few_shot=[{"instruction": "2+2?", "response": "4"}], temperature=0.2,
              max_tokens=64, n=2, seed=5, stop=["END"])
    request = s.format_input(record(("user", "Name a colour.")))
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "Name a colour."),
    ]
    assert (request.temperature, request.max_tokens, request.n, request.seed, request.stop) == (0.2, 64, 2, 5, ["END"])
    # The conversation's own system prompt stays first, before the examples, and is not doubled.
    own = s.format_input(record(("system", "Own."), ("user", "Q")))
    assert [(m.role, m.text) for m in own.messages] == [("system", "Own."), ("user", "2+2?"), ("assistant", "4"), ("user", "Q")]


def test_regenerate_drops_the_old_answer_and_answered_records_pass_through():
    answered = record(("user", "Q"), ("assistant", "old"))
    assert stage().passes_through(answered)
    assert not stage().passes_through(record(("user", "Q")))
    s = stage(regenerate=True)
    assert not s.passes_through(answered)
    assert [(m.role, m.text) for m in s.format_input(answered).messages] == [("user", "Q")]


def test_format_input_rejects_what_cannot_be_answered():
    assert stage().format_input(record(("assistant", "hello"))).reason == "no_instruction"
    assert stage().format_input(record(("user", "   "))).reason == "no_instruction"
    with_image = record(("user", [{"type": "image", "text": None}, {"type": "text", "text": "What?"}]), images=[b"x"])
    rejected = stage().format_input(with_image)
    assert rejected.reason == "images_unsupported" and "no-model takes no images" in rejected.detail


def test_format_output_over_clean_noisy_empty_and_cut_answers():
    s = stage(n=3, max_tokens=8)
    rec = record(("user", "Q"), meta={"source": "demo"})
    done = Completion(texts=["  A clean answer.\n", "", "cut off"], finish_reasons=["stop", "stop", "length"])
    [out] = s.format_output(rec, done)
    assert out["messages"] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A clean answer."}]
    assert out["meta"]["source"] == "demo" and out["meta"]["model"] == "no-model"
    assert out["meta"]["parent_id"] == rec["id"] and out["meta"]["sample"] == 0
    assert out["meta"]["finish_reason"] == "stop" and out["meta"]["generation"]["n"] == 3
    assert out["id"] != rec["id"]
    assert s.format_output(rec, Completion(texts=["", "  "], finish_reasons=["stop", "stop"])).reason == "empty"
    assert s.format_output(rec, Completion(texts=["cut"], finish_reasons=["length"])).reason == "truncated"
    [kept] = stage(keep_truncated=True).format_output(rec, Completion(texts=["cut"], finish_reasons=["length"]))
    assert kept["meta"]["finish_reason"] == "length"


def test_instruction_tables_become_sft_records(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        json.dumps({"instruction": "Translate to French.", "input": "cat", "output": ""}) + "\n"
        + json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi!"}) + "\n"
    )
    rows = list(sft_records(open_source(path)))
    assert rows[0]["messages"] == [{"role": "user", "content": "Translate to French.\n\ncat"}]
    assert rows[1]["messages"][-1] == {"role": "assistant", "content": "Hi!"}
    assert rows[0]["meta"] == {"source": f"{tmp_path.name}/tasks.jsonl"}  # stable: no path above its folder
    assert rows[0]["id"] == content_id(rows[0]["messages"])  # every record gets an id its answers can name
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "?"}) + "\n")
    from synth.errors import SynthError

    with pytest.raises(SynthError, match="'instruction' column"):
        list(sft_records(open_source(bad)))


# ---------------------------------------------------------------- `synth generate` end to end


def write_tasks(path, texts, answered=()):
    with open(path, "w") as f:
        for text in texts:
            f.write(json.dumps({"instruction": text}) + "\n")
        for text, answer in answered:
            f.write(json.dumps({"instruction": text, "output": answer}) + "\n")
    return path


def rows_of(out):
    return [dict(r, meta=load_meta(r["meta"])) for r in read_dataset(out)]


def test_generate_against_the_test_server_caches_and_records_failures(tmp_path, llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    tasks = write_tasks(tmp_path / "tasks.jsonl", [f"Question number {i}" for i in range(6)] + ["BOOM please"],
                        answered=[("Old question", "Old answer")])
    llm_server.fault("status", status=400, marker="BOOM")
    out = tmp_path / "out"
    args = ["generate", str(tasks), "--out", str(out), "--base-url", llm_server.base_url, "--model", "test-model",
            "--cache-dir", str(tmp_path / "cache"), "--temperature", "0", "--system", "Answer briefly."]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 7 records" in result.output and "failed: http_400" in result.output

    rows = rows_of(out)
    by_question = {next(m["content"] for m in r["messages"] if m["role"] == "user"): r for r in rows}
    assert len(rows) == 7 and "Old question" in by_question  # answered records pass through unchanged
    assert by_question["Old question"]["messages"][-1]["content"] == "Old answer"
    answer = by_question["Question number 3"]
    assert answer["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert answer["messages"][-1] == {"role": "assistant", "content": "Question number 3"}  # the server echoes
    assert answer["meta"]["model"] == "test-model" and answer["meta"]["generation"]["temperature"] == 0
    assert answer["meta"]["parent_id"] == content_id([{"role": "user", "content": "Question number 3"}])

    # The failed request is a failure, not a reject: in failures.jsonl inside the output, never cached.
    assert not (out / "rejects.jsonl").exists() and not (tmp_path / "out.rejects.jsonl").exists()
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["reason"] for f in failures] == ["http_400"] and "400" in failures[0]["detail"]
    usage = json.loads((out / "usage.json").read_text())
    assert usage["usage"]["requests"] == 7 and usage["usage"]["failures"] == 1 and usage["usage"]["cached"] == 0
    assert usage["usage"]["backend"] == "openai"
    [stats] = json.loads((out / "report.json").read_text())["stages"]
    assert stats["failed"] == {"http_400": 1} and stats["dropped"] == {}
    sent = llm_server.request_count
    assert sent == 7

    # The rerun is served from the cache: no new request except the failure, which is retried.
    again = runner.invoke(app, args + ["--overwrite"])
    assert again.exit_code == 0, again.output
    assert llm_server.request_count == sent + 1
    assert json.loads((out / "usage.json").read_text())["usage"]["cached"] == 6
    assert rows_of(out) == rows


def test_generate_n_samples_and_limit(tmp_path, llm_server):
    llm_server.script(lambda body: ["first", "second"])  # one text per choice
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["a", "b", "c"])
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(tasks), "--out", str(out), "--base-url", llm_server.base_url,
                                 "--model", "m", "--n", "2", "--limit", "2", "--no-cache"])
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    assert len(rows) == 4
    assert sorted((r["messages"][0]["content"], r["meta"]["sample"], r["messages"][-1]["content"]) for r in rows) == [
        ("a", 0, "first"), ("a", 1, "second"), ("b", 0, "first"), ("b", 1, "second"),
    ]
    assert len({r["id"] for r in rows}) == 4


def test_generate_refuses_existing_output_and_unknown_input(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["a"])
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["generate", str(tasks), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(app, ["generate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o2"),
                                 "--backend", "local", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "no such file" in result.output
    assert not (tmp_path / "o2").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from synth.llm.tiny import build_tiny_model

    torch.set_num_threads(1)
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-lm")))


def test_generate_with_a_tiny_local_model_and_regenerate(tmp_path, tiny_model):
    from synth.records import Message, Sample, samples_to_dataset

    source = tmp_path / "sft"
    samples = [Sample(messages=[Message(role="user", content=f"Tell me about topic {i}"),
                                Message(role="assistant", content="placeholder")]) for i in range(5)]
    samples_to_dataset(samples).save_to_disk(str(source))
    out = tmp_path / "out"
    args = ["generate", str(source), "--out", str(out), "--backend", "local", "--model", tiny_model,
            "--max-tokens", "6", "--temperature", "0", "--keep-truncated", "--cache-dir", str(tmp_path / "cache")]

    kept = runner.invoke(app, args)  # every record already has an answer: nothing to generate
    assert kept.exit_code == 0, kept.output
    assert [r["messages"][-1]["content"] for r in rows_of(out)] == ["placeholder"] * 5

    result = runner.invoke(app, args + ["--regenerate", "--overwrite", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    assert len(rows) == 5 and all(r["messages"][-1]["content"] != "placeholder" for r in rows)
    assert all(r["meta"]["model"] == tiny_model for r in rows)
    usage = json.loads((out / "usage.json").read_text())["usage"]
    assert usage["backend"] == "local" and usage["requests"] == 5
    assert 0 < usage["completion_tokens"] <= 30 and usage["prompt_tokens"] > 0

    # Same work again: all from the cache, same answers.
    again = runner.invoke(app, args + ["--regenerate", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "usage.json").read_text())["usage"]["cached"] == 5
    assert json.loads((out / "usage.json").read_text())["usage"]["requests"] == 0
    assert [r["messages"] for r in rows_of(out)] == [r["messages"] for r in rows]


# ---------------------------------------------------------------- one declaration: command, recipe, few-shot


def test_the_generated_command_offers_every_config_field_and_a_recipe_typo_names_its_line(tmp_path):
    import typer.main

    from synth.errors import SynthError
    from synth.run.recipe import load_recipe

    command = typer.main.get_command(app).commands["generate"]
    params = {p.name: p for p in command.params}
    assert set(ResponsesConfig.model_fields) <= set(params)  # every option of the config is a flag
    assert params["n"].opts == ["--n"] and params["few_shot"].opts == ["--few-shot"]
    assert {"batch_size", "limit", "split"} <= set(params)  # the flags `synth generate` always had
    shown = " ".join(runner.invoke(app, ["generate", "--help"], terminal_width=200).output.split())
    assert "--keep-truncated" in shown and "--regenerate" in shown and "--top-p" in shown
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  - {type: demo, name: shapes, count: 2}\n  - type: generate\n    name: answers\n"
                      "    input: shapes\n    keep_truncatd: true\n")
    with pytest.raises(SynthError) as e:
        load_recipe(recipe)
    assert str(e.value) == f"{recipe}:6: stages.1.keep_truncatd: unknown key (did you mean 'keep_truncated'?)"


def test_few_shot_default_is_decided_by_the_backend_in_one_place(tmp_path, tiny_model):
    from synth.generate.responses import default_few_shot, few_shot_examples
    from synth.llm.cache import CachedBackend
    from synth.llm.embedded import EMBEDDED_MODEL
    from synth.llm.local import LocalBackend, LocalConfig

    embedded = LocalBackend(LocalConfig(model=EMBEDDED_MODEL))  # nothing is loaded until a request
    shipped = default_few_shot()
    assert len(shipped) >= 3 and few_shot_examples(None, embedded) == shipped
    assert few_shot_examples(None, CachedBackend(embedded, tmp_path / "cache.sqlite")) == shipped
    assert few_shot_examples(None, LocalBackend(LocalConfig(model=tiny_model))) == []  # another model: none
    assert few_shot_examples(None, _NoBackend()) == []
    assert few_shot_examples([], embedded) == []  # an explicit empty list wins
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"instruction": "1+1?", "response": "2"}) + "\n")
    assert [e.instruction for e in few_shot_examples(str(shots), embedded)] == ["1+1?"]
    assert ResponseGenerator(embedded, ResponsesConfig()).few_shot == shipped


def test_recipe_few_shot_file_beside_the_recipe_is_read_and_fingerprinted_and_limit_applies(
        tmp_path, llm_server, monkeypatch):
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import backend_block, write_recipe

    folder = tmp_path / "project"
    folder.mkdir()
    write_tasks(folder / "tasks.jsonl", ["a", "b", "c"])
    (folder / "shots.jsonl").write_text(json.dumps({"instruction": "Say one.", "response": "One."}) + "\n")
    recipe = write_recipe(folder, backend_block(llm_server) + """
stages:
  - {type: source, name: tasks, path: tasks.jsonl}
  - {type: generate, name: answers, input: tasks, few_shot: shots.jsonl, limit: 2, temperature: 0}
""")
    monkeypatch.chdir(tmp_path)  # the files are found beside the recipe, not in the working folder
    options = RunOptions(runs_dir=tmp_path / "runs", live=False)
    first = run_recipe(recipe, options=options)
    rows = rows_of(first.run_dir / "answers")
    assert sorted(r["messages"][0]["content"] for r in rows) == ["a", "b"]  # limit: 2
    assert all(r["meta"]["generation"]["few_shot"] == 1 for r in rows)
    assert {m["content"] for body in llm_server.requests for m in body["messages"]} >= {"Say one.", "One."}
    sent = llm_server.request_count

    (folder / "shots.jsonl").write_text(json.dumps({"instruction": "Say two.", "response": "Two."}) + "\n")
    run_recipe(recipe, options=options)  # the edited file reruns the stage (not a stale reuse)
    assert llm_server.request_count == sent + 2
    assert {m["content"] for body in llm_server.requests[sent:] for m in body["messages"]} >= {"Say two.", "Two."}


def test_the_dataset_card_lineage_counts_a_generate_output_once(tmp_path, llm_server):
    from synth.publish.lineage import describe

    llm_server.fault("status", status=400, marker="BOOM")
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["a", "b", "BOOM"], answered=[("c", "C")])
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(tasks), "-o", str(out), "--base-url", llm_server.base_url,
                                 "--model", "test-model", "--no-cache"])
    assert result.exit_code == 0, result.output
    lineage = describe(out)
    [stage] = lineage.stages
    assert (stage.name, stage.kind, stage.seen, stage.kept) == ("generate", "generate", 4, 3)
    assert stage.failed == {"http_400": 1} and "generate" in lineage.all_methods()
    assert lineage.tokens()["requests"] == 3


def test_a_command_that_answers_nothing_is_one_clear_error_and_writes_nothing(tmp_path, llm_server):
    from tests.cli_helpers import one_line_error

    llm_server.script(lambda body: "   ")  # every answer empty
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["a", "b"])
    result = runner.invoke(app, ["generate", str(tasks), "-o", str(tmp_path / "out"), "--base-url",
                                 llm_server.base_url, "--model", "test-model", "--no-cache"])
    one_line_error(result, "no record got an answer (empty: 2)")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tasks.jsonl"]
