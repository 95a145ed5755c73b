"""The Python API (`import synth`): steps made from the stage-type registry, `synth.Pipeline` run by the
recipe runner (in memory, in a run folder, on an in-memory Dataset, with an LLM step on the loopback
server), its recipe YAML round trip with the same fingerprints as `synth run`, `read` / `write`, and the
README's Python example."""

from __future__ import annotations

import inspect
import json
import os
import pydoc
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml
from pydantic import Field

import synth
from synth.errors import SynthError
from tests.cli_helpers import run_cli
from tests.run_helpers import rows
from tests.train_helpers import demo_images

REPO = Path(__file__).resolve().parent.parent


def dataset_rows(dataset) -> list[dict]:
    return dataset.with_format("arrow")[:].to_pylist()


def manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def pipeline_temps() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("synth-pipeline-*")}


# ---------------------------------------------------------------- import synth


def test_import_synth_is_fast_and_loads_neither_torch_nor_datasets():
    code = ("import sys, synth; print(synth.__version__); "
            "print(sorted(m for m in ('torch', 'datasets', 'transformers', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert out.stdout.split("\n")[:2] == [synth.__version__, "[]"], out.stdout + out.stderr


def test_the_public_names():
    from synth.pipeline.stage import Failed, Rejected

    assert synth.Rejected is Rejected and synth.Failed is Failed
    assert {"Pipeline", "ops", "backends", "read", "write", "Rejected", "Failed"} <= set(dir(synth))
    from synth.core.operator import Filter, LLMTask, OperatorConfig

    assert synth.Filter is Filter and synth.LLMTask is LLMTask and synth.OperatorConfig is OperatorConfig
    assert synth.backends.OpenAI(model="m").options() == {"backend": "openai", "model": "m"}
    with pytest.raises(AttributeError):
        synth.nothing_here  # noqa: B018


# ---------------------------------------------------------------- steps


def test_ops_has_one_step_per_registered_stage_type_and_no_source():
    from synth.run.adapters import registry

    expected = {t for t, a in registry().items() if not a.source}
    assert {getattr(synth.ops, name).type for name in dir(synth.ops)} == expected
    assert synth.ops.SelfInstruct.type == "self_instruct" and synth.ops.PseudoLabel.type == "pseudo_label"
    assert "Source" not in dir(synth.ops)
    with pytest.raises(AttributeError, match="no step 'Source'.*Adapt"):
        synth.ops.Source  # noqa: B018


def test_a_newly_registered_stage_type_is_a_step_with_its_own_help(monkeypatch):
    from synth.run.adapters import StageAdapter, registry
    from synth.run.recipe import StageSpec

    class WordCountSpec(StageSpec):
        """Keep records whose answer has at least `min_words` words."""

        type: Literal["word_count"]
        input: str
        min_words: int = Field(3, ge=1, description="fewest words an answer may have")

    class WordCountAdapter(StageAdapter):
        type = "word_count"
        Spec: ClassVar = WordCountSpec

    monkeypatch.setitem(registry(), "word_count", WordCountAdapter())
    step = synth.ops.WordCount(min_words=5)
    assert "WordCount" in dir(synth.ops) and step.options == {"min_words": 5}
    assert inspect.signature(synth.ops.WordCount).parameters["min_words"].default == 3
    assert "fewest words an answer may have" in pydoc.render_doc(synth.ops.WordCount)
    with pytest.raises(SynthError, match="synth.ops.WordCount: min_words: .*greater than or equal to 1"):
        synth.ops.WordCount(min_words=0)


def test_help_shows_each_option_with_its_default_and_description():
    params = inspect.signature(synth.ops.Dedup).parameters
    assert params["threshold"].default == 0.8 and params["threshold"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(params)[:2] == ["name", "input"]
    text = pydoc.render_doc(synth.ops.Dedup)
    assert "threshold (float, default 0.8): estimated Jaccard" in text
    assert synth.ops.Dedup.adapter().Spec.__doc__.strip().splitlines()[0] in text  # the stage's own summary
    assert "required): Template set: a shipped name" in pydoc.render_doc(synth.ops.Adapt)
    assert "base_url" in str(inspect.signature(synth.backends.OpenAI))


@pytest.mark.parametrize("build, fragments", [
    (lambda: synth.ops.Dedup(treshold=0.8),
     ["synth.ops.Dedup: treshold: unknown key (did you mean 'threshold'?); valid keys: name,", "num_perm"]),
    (lambda: synth.ops.Dedup(threshold=2), ["synth.ops.Dedup: threshold: ", "less than or equal to 1"]),
    (lambda: synth.ops.Adapt(template="scene_qa"), ["synth.ops.Adapt: template: ", "did you mean 'scene_qa_text'"]),
    (lambda: synth.ops.Adapt(), ["synth.ops.Adapt: template: required, not given"]),
    (lambda: synth.ops.Filter(filters=[{"name": "length", "min_words": 3}]),
     ["synth.ops.Filter: filters.0.min_words: unknown key (did you mean 'min_answer_words'?)"]),
    (lambda: synth.ops.Mix(input="x", sources=[]), ["synth.ops.Mix: input: unknown key; valid keys: name, sources"]),
    (lambda: synth.ops.Generate(api_key="sk-1234567890"), ["synth.ops.Generate: api_key: secrets never go"]),
    (lambda: synth.ops.Dedup(name="manifest.json"), ["synth.ops.Dedup: name: 'manifest.json' cannot name"]),
    (lambda: synth.ops.Dedup(threshold=synth.backends.Local()), ["synth.ops.Dedup: threshold: takes a value, not a backend object"]),
    (lambda: synth.backends.OpenAI(model="m", api_key="sk-1234567890"),
     ["synth.backends.OpenAI: api_key: keys never go in", "api_key_env"]),
    (lambda: synth.backends.OpenAI(model="m", concurency=4),
     ["synth.backends.OpenAI: concurency: unknown key (did you mean 'concurrency'?)"]),
])
def test_a_bad_option_is_one_line_naming_the_step_and_the_key(build, fragments):
    with pytest.raises(SynthError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and "sk-1234567890" not in message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- running


def test_in_memory_run_gives_the_rows_synth_run_writes_for_its_yaml(tmp_path):
    shapes = demo_images(8)
    pipeline = synth.Pipeline([synth.ops.Adapt(template=["vqa_short", "caption_brief"]), synth.ops.Dedup()])
    before = pipeline_temps()
    dataset = pipeline.run(shapes)
    assert pipeline_temps() == before  # the temporary run folder is gone
    recipe = tmp_path / "elsewhere" / "recipe.yaml"
    recipe.parent.mkdir()
    recipe.write_text(pipeline.to_yaml(source=shapes))
    result = run_cli("run", recipe, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    expected = rows(tmp_path / "runs" / "recipe" / "dedup")
    assert set(dataset.column_names) == {"id", "messages", "images", "meta"}
    assert len(dataset) == len(expected) > 8
    assert dataset_rows(dataset) == expected


def test_with_output_dir_it_is_a_run_folder_and_a_second_run_reuses_every_stage(tmp_path):
    shapes = demo_images(8)
    pipeline = synth.Pipeline([synth.ops.Adapt(template="scene_qa_text"), synth.ops.Dedup(threshold=0.9)])
    out = tmp_path / "runs" / "py"
    first = pipeline.run(shapes, out)
    assert (out / "manifest.json").is_file() and (out / "recipe.yaml").is_file()
    assert first.run_dir == out and manifest(out)["state"] == "done"
    assert [(s.name, s.state) for s in first.stages] == [("source", "source"), ("adapt", "ran"), ("dedup", "ran")]
    assert dataset_rows(first.dataset) == rows(out / "dedup")
    second = pipeline.run(shapes, out)
    assert [s.state for s in second.stages] == ["source", "reused", "reused"]
    assert dataset_rows(second.dataset) == rows(out / "dedup")


def test_yaml_from_python_runs_with_synth_run_at_the_same_fingerprints(tmp_path, monkeypatch):
    """The stage fingerprints of the pipeline's own run equal those `synth run` computes for its YAML,
    so `synth run` on the pipeline's run folder reuses every stage."""
    shapes = demo_images(8)
    monkeypatch.chdir(tmp_path)
    templates = tmp_path / "sets"
    templates.mkdir()
    (templates / "short.yaml").write_text((REPO / "templates" / "adapt" / "vqa_short.yaml").read_text())
    pipeline = synth.Pipeline([synth.ops.Adapt(template="sets/short.yaml"),
                               synth.ops.Filter(filters=["length:min_answer_words=1"]),
                               synth.ops.Dedup(threshold=0.85)], seed=3, shard_size=5)
    text = pipeline.to_yaml(source=shapes)
    assert f"- {templates / 'short.yaml'}" in text  # the relative path made absolute: runs from any folder
    ran = pipeline.run(shapes, tmp_path / "runs" / "py")
    recipe = tmp_path / "other" / "from_python.yaml"
    recipe.parent.mkdir()
    recipe.write_text(text)
    monkeypatch.chdir(recipe.parent)

    from synth.run import load_recipe

    loaded = load_recipe(recipe)
    assert [s.name for s in loaded.recipe.stages] == ["source", "adapt", "filter", "dedup"]
    result = run_cli("run", recipe, "--runs-dir", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    ours, theirs = manifest(ran.run_dir), manifest(tmp_path / "cli" / "from_python")
    assert {n: e["fingerprint"] for n, e in ours["stages"].items()} == \
           {n: e["fingerprint"] for n, e in theirs["stages"].items()}
    assert ours["stages"]["adapt"]["shards"] == 2  # shard_size=5 over 8 records
    again = run_cli("run", recipe, "--runs-dir", tmp_path / "runs", "--name", "py")
    assert again.exit_code == 0, again.output
    assert [manifest(ran.run_dir)["stages"][n]["state"] for n in ("adapt", "filter", "dedup")] == ["reused"] * 3


def test_an_in_memory_dataset_is_a_source(tmp_path):
    shapes = demo_images(8)
    dataset = synth.read(shapes)
    assert len(dataset) == 8 and "image" in dataset.column_names
    pipeline = synth.Pipeline([synth.ops.Adapt(template="vqa_short")])
    from_memory = pipeline.run(dataset, limit=5)
    assert dataset_rows(from_memory) == dataset_rows(pipeline.run(shapes, limit=5))
    cached = list((Path(os.environ["SYNTH_CACHE_DIR"]) / "inputs").iterdir())
    assert dataset._fingerprint in [p.name for p in cached]
    out = tmp_path / "run"
    assert [s.state for s in pipeline.run(dataset, out).stages] == ["source", "ran"]
    assert [s.state for s in pipeline.run(synth.read(shapes), out).stages] == ["source", "reused"]


def test_an_llm_step_with_a_backend_object_on_the_loopback_server(llm_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script("a triangle")
    server = synth.backends.OpenAI(model="test-model", base_url=llm_server.base_url, max_retries=1,
                                   backoff_base=0.01, timeout=10)
    pipeline = synth.Pipeline([synth.ops.Adapt(template="scene_qa_text"),
                               synth.ops.Generate(backend=server, regenerate=True, max_tokens=16, temperature=0)])
    recipe = pipeline.to_recipe()
    assert recipe["backends"] == {"b1": {"backend": "openai", "model": "test-model",
                                         "base_url": llm_server.base_url, "max_retries": 1,
                                         "backoff_base": 0.01, "timeout": 10.0}}
    assert recipe["stages"][1]["backend"] == "b1"
    dataset = pipeline.run(demo_images(8), limit=2)
    answers = [row["messages"][-1] for row in dataset]
    assert answers and all(m == {"role": "assistant", "content": "a triangle"} for m in answers)
    assert llm_server.request_count == len(dataset)
    result = pipeline.run(demo_images(8), tmp_path / "llm", limit=2)  # the same requests, now in a run folder
    assert result.manifest["stages"]["generate"]["model"]["model"] == "test-model"


def test_python_yaml_python_yaml_is_identical(tmp_path):
    judge = synth.backends.OpenAI(model="judge-model", base_url="http://127.0.0.1:9/v1", name="judge")
    server = synth.backends.OpenAI(model="m", base_url=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"],
                                   concurrency=4)
    adapt = synth.ops.Adapt(template=["vqa_short"], name="vqa")
    pipeline = synth.Pipeline([
        adapt,
        synth.ops.Adapt(template="scene_qa_text", input="source", map={"scene": "caption"}),
        synth.ops.Generate(backend=server, max_tokens=32, regenerate=True),
        synth.ops.Filter(filters=["length:min_answer_words=2", {"name": "repetition"}], backend=judge),
        synth.ops.Dedup(),
        synth.ops.Dedup(threshold=0.7),
        synth.ops.Prefs(input=adapt, strategy="judge", samplers=[{"backend": server, "temperature": 0.9}],
                        judge=judge),
        synth.ops.Mix(sources=[{"input": adapt, "weight": 2}, {"input": "dedup_2", "count": 3}], total=5),
        synth.ops.Export(format="trl"),
    ], seed=7, llm_shard_size=16, name="round-trip")
    text = pipeline.to_yaml()
    data = yaml.safe_load(text)
    assert [s["name"] for s in data["stages"]] == ["vqa", "adapt", "generate", "filter", "dedup", "dedup_2", "prefs",
                                                    "mix", "export"]
    assert [s.get("input") for s in data["stages"]] == ["source", "source", "adapt", "generate", "filter", "dedup",
                                                        "vqa", None, "mix"]
    assert list(data["backends"]) == ["b1", "judge"] and data["stages"][6]["samplers"][0]["backend"] == "b1"
    assert "threshold" not in data["stages"][4] and data["stages"][5]["threshold"] == 0.7  # only options given
    again = synth.Pipeline.from_yaml(text)
    assert again.to_yaml() == text and again == pipeline
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert synth.Pipeline.from_yaml(path).to_yaml() == text
    with_source = pipeline.to_yaml(source=str(tmp_path))
    assert synth.Pipeline.from_yaml(with_source).to_yaml() == with_source
    hub = pipeline.to_recipe(source="someone/some-dataset", split="train", limit=10)["stages"][0]
    assert hub == {"type": "source", "name": "source", "path": "someone/some-dataset", "split": "train", "limit": 10}


def test_a_pipeline_that_makes_its_own_data_runs_without_a_source():
    pipeline = synth.Pipeline([synth.ops.Demo(count=3, size=64), synth.ops.Adapt(template="caption_brief")])
    assert pipeline.to_recipe()["stages"][1]["input"] == "demo"
    dataset = pipeline.run()
    assert len(dataset) == 3 and len(dataset[0]["images"]) == 1


def test_a_recipe_file_becomes_a_pipeline_with_paths_relative_to_its_folder(tmp_path, monkeypatch):
    shapes = demo_images(8)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "short.yaml").write_text((REPO / "templates" / "adapt" / "vqa_short.yaml").read_text())
    (folder / "recipe.yaml").write_text(textwrap.dedent(f"""\
        stages:
          - {{type: source, name: shapes, path: {shapes}, limit: 4}}
          - {{type: adapt, name: vqa, input: shapes, template: short.yaml}}
        """))
    monkeypatch.chdir(tmp_path)
    pipeline = synth.Pipeline.from_yaml(folder / "recipe.yaml")
    assert pipeline.steps[1].options["template"] == [str(folder / "short.yaml")]
    dataset = pipeline.run()  # its own source stage
    from synth.records import load_meta

    assert len({load_meta(m)["source_id"] for m in dataset["meta"]}) == 4  # limit: 4 of the 8 images
    with pytest.raises(SynthError, match="no step reads the source"):
        pipeline.run(shapes)


@pytest.mark.parametrize("make, fragments", [
    (lambda s: synth.Pipeline([synth.ops.Dedup()]).run(), ["the first step reads the run's source: give one"]),
    (lambda s: synth.Pipeline([synth.ops.Adapt(template="vqa_short"), synth.ops.Dedup(input="nope")]).run(s),
     ["synth.Pipeline: step 'dedup': input: ", "nope"]),
    (lambda s: synth.Pipeline([synth.ops.Adapt(template="vqa_short"), synth.ops.Export(format="trl")]).run(s),
     ["the last step (export) writes files, not a dataset; pass output_dir="]),
    (lambda s: synth.Pipeline([synth.ops.Dedup(name="x"), synth.ops.Dedup(name="x")]).to_yaml(),
     ["two steps are named 'x'"]),
    (lambda s: synth.Pipeline([synth.ops.Dedup(input=synth.ops.Dedup())]).to_yaml(), ["is not a step of this"]),
    (lambda s: synth.Pipeline(["dedup"]), ["step 1 is a str, not a step"]),
    (lambda s: synth.Pipeline([synth.ops.Dedup()]).run(s / "missing"), ["missing"]),
])
def test_pipeline_errors_are_one_line_without_the_temporary_recipe(make, fragments):
    before = pipeline_temps()
    with pytest.raises(SynthError) as caught:
        make(demo_images(8))
    message = str(caught.value)
    assert "\n" not in message and "synth-pipeline-" not in message and "pipeline.yaml" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert pipeline_temps() == before


# ---------------------------------------------------------------- read / write


def test_write_a_dataset_records_or_an_export(tmp_path):
    dataset = synth.Pipeline([synth.ops.Adapt(template="scene_qa_text")]).run(demo_images(8), limit=2)
    assert synth.write(dataset, tmp_path / "copy") == tmp_path / "copy"
    assert dataset_rows(synth.read(tmp_path / "copy")) == dataset_rows(dataset)
    with pytest.raises(SynthError, match="already exists"):
        synth.write(dataset, tmp_path / "copy")
    records = [{"id": "r1", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}]
    synth.write(records, tmp_path / "records")
    assert synth.read(tmp_path / "records")["messages"] == [records[0]["messages"]]
    out = synth.write(dataset, tmp_path / "trl", format="trl")
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".parquet")
    with pytest.raises(SynthError, match="unknown export format 'nope'"):
        synth.write(dataset, tmp_path / "x", format="nope")
    with pytest.raises(SynthError, match="has no 'messages'"):
        synth.write([{"text": "no layout"}], tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the README's example


def readme_example() -> str | None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    marker = text.find("<!-- python-example -->")
    if marker < 0:
        return None
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    return block.group(1) if block else None


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    code = readme_example()
    if code is None:
        pytest.skip("README.md has no ```python block after a '<!-- python-example -->' line yet")
    monkeypatch.chdir(tmp_path)
    result = run_cli("demo-data", "demo/shapes", "--count", 8, "--size", 64)
    assert result.exit_code == 0, result.output
    scope: dict = {}
    exec(compile(code, "README.md python-example", "exec"), scope)  # noqa: S102 - our own README
    dataset = scope["dataset"]
    assert len(dataset) > 0 and "messages" in dataset.column_names
    assert (tmp_path / "runs" / "py" / "manifest.json").is_file()
