"""A third-party package (the one docs/write-an-operator.md shows) adds a filter and an LLM operator through the `synth.operators` entry-point group:
one file each, built and installed (pip, offline) in the test's temp dir, with no file of synth edited.
Both must appear in `synth --help` and `synth operators`, get a command generated from their config,
validate in a recipe (errors at file:line), run from the CLI, from `synth run` and from Python, and get a
docs page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DOCS_PAGE = REPO / "docs" / "write-an-operator.md"


def page_files() -> dict[str, str]:
    """The plugin's files as the docs page shows them: each fenced block after ``<!-- plugin:FILE -->``."""
    text = DOCS_PAGE.read_text(encoding="utf-8")
    found = dict(re.findall(r"<!-- plugin:([\w.]+) -->\n```\w*\n(.*?)```", text, flags=re.S))
    assert set(found) == {"banned.py", "polite.py", "pyproject.toml"}, found.keys()
    return found


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin package written and installed (pip, no index, no build isolation) into a folder."""
    files = page_files()
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "synth_plugin_demo").mkdir()
    (src / "synth_plugin_demo" / "__init__.py").write_text("")
    (src / "synth_plugin_demo" / "banned.py").write_text(files["banned.py"])
    (src / "synth_plugin_demo" / "polite.py").write_text(files["polite.py"])
    (src / "pyproject.toml").write_text(files["pyproject.toml"])
    site = tmp_path_factory.mktemp("plugin-site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("synth_plugin_demo-0.1.0.dist-info/entry_points.txt"))
    return site


def synth(site: Path, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "HF_HUB_OFFLINE": "1",
           "COLUMNS": "200", "SYNTH_PROGRESS_INTERVAL": "0"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "synth", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


def python(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "HF_HUB_OFFLINE": "1",
           "SYNTH_PROGRESS_INTERVAL": "0"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=cwd)


def answers(path: Path) -> Path:
    rows = [("What colour is the sky?", "blue darn it"), ("Name a fruit.", "apple"),
            ("Two plus two?", "four, obviously darn"), ("A pet?", "a cat")]
    with open(path, "w") as f:
        for q, a in rows:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")
    return path


def read_answers(folder: Path) -> list[str]:
    from datasets import load_from_disk

    return [r["messages"][-1]["content"] for r in load_from_disk(str(folder))]


def test_plugin_operators_are_listed_with_generated_commands(plugin_site):
    help_text = synth(plugin_site, "--help").stdout
    assert "banned-words" in help_text and "polite" in help_text
    listed = {row["name"]: row for row in json.loads(synth(plugin_site, "operators", "--json").stdout)}
    assert listed["banned_words"]["kind"] == "filter" and listed["polite"]["kind"] == "llm"
    assert "synth-plugin-demo" in listed["polite"]["origin"] and listed["dedup"]["origin"] == "synth"
    command_help = synth(plugin_site, "banned-words", "--help").stdout
    assert "--words" in command_help and "--max-hits" in command_help and "how many banned words" in command_help
    assert "--base-url" in synth(plugin_site, "polite", "--help").stdout  # the shared LLM options
    # without the plugin on the path, none of it exists
    bare = subprocess.run([sys.executable, "-m", "synth", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert "banned-words" not in bare.stdout


def test_plugin_filter_runs_from_the_cli_and_in_a_filter_chain(plugin_site, tmp_path):
    data = answers(tmp_path / "answers.jsonl")
    done = synth(plugin_site, "banned-words", data, "-o", tmp_path / "clean", "--words", "darn")
    assert done.returncode == 0, done.stderr
    assert read_answers(tmp_path / "clean") == ["apple", "a cat"]
    assert {json.loads(line)["reason"] for line in open(tmp_path / "clean" / "rejects.jsonl")} == {"banned_word"}
    chained = synth(plugin_site, "filter", data, "-o", tmp_path / "chain", "-f", "banned_words:words=[darn],max_hits=1")
    assert chained.returncode == 0, chained.stderr
    assert read_answers(tmp_path / "chain") == ["blue darn it", "apple", "four, obviously darn", "a cat"]
    bad = synth(plugin_site, "banned-words", data, "-o", tmp_path / "bad", "--words", "x", "--max-hits", "-1")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "max_hits" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_plugin_llm_operator_runs_from_the_cli(plugin_site, tmp_path, llm_server):
    llm_server.script(lambda body: "Kindly: " + body["messages"][-1]["content"].split(":", 1)[1].strip())
    data = answers(tmp_path / "answers.jsonl")
    done = synth(plugin_site, "polite", data, "-o", tmp_path / "polite", "--base-url", llm_server.base_url,
                 "--model", "test-model", "--prefix", "Please rewrite:")
    assert done.returncode == 0, done.stderr
    assert read_answers(tmp_path / "polite")[1] == "Kindly: apple"
    assert "Please rewrite: apple" in json.dumps(llm_server.requests)


def test_plugin_operators_validate_and_run_in_a_recipe(plugin_site, tmp_path, llm_server):
    llm_server.script(lambda body: "Kindly: " + body["messages"][-1]["content"].split(":", 1)[1].strip())
    answers(tmp_path / "answers.jsonl")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""
        backends:
          server: {{backend: openai, base_url: "{llm_server.base_url}", model: test-model}}
        stages:
          - {{type: source, name: raw, path: answers.jsonl}}
          - type: banned_words
            name: clean
            input: raw
            words: [darn]
          - {{type: polite, name: polite, input: clean, backend: server}}
    """))
    done = synth(plugin_site, "run", recipe, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_answers(tmp_path / "runs" / "recipe" / "polite") == ["Kindly: apple", "Kindly: a cat"]
    recipe.write_text(recipe.read_text().replace("words: [darn]", "words: [darn]\n    max_hitz: 2"))
    bad = synth(plugin_site, "run", recipe, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert bad.returncode == 1
    assert "recipe.yaml:10: stages.1.max_hitz: unknown key (did you mean 'max_hits'?)" in bad.stderr


def test_plugin_operators_have_docs_pages(plugin_site, tmp_path):
    done = python(plugin_site, """
        from synth.run.docs import generated_pages
        pages = generated_pages()
        print(pages["operators/banned_words.md"])
        print(pages["operators/index.md"])
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "# `banned_words`" in done.stdout and "| `max_hits` | int | `0` |" in done.stdout
    assert "[`polite`](polite.md) | llm | Rewrite every answer politely with an LLM." in done.stdout


def test_the_docs_pages_unit_test_example_runs(tmp_path):
    """The page's "Test it" example, run against the page's filter."""
    text = DOCS_PAGE.read_text(encoding="utf-8")
    example = re.findall(r"```python\n(def test_banned_words.*?)```", text, flags=re.S)
    assert example, "the page's unit-test example is gone"
    namespace: dict = {}
    exec(compile(page_files()["banned.py"], "banned.py", "exec"), namespace)
    exec(compile(example[0], "example", "exec"), namespace)
    namespace["test_banned_words_drops_and_says_why"](tmp_path)


def test_plugin_operators_run_from_python(plugin_site, tmp_path, llm_server):
    llm_server.script(lambda body: "Kindly: " + body["messages"][-1]["content"].split(":", 1)[1].strip())
    answers(tmp_path / "answers.jsonl")
    done = python(plugin_site, f"""
        import synth
        pipeline = synth.Pipeline([
            synth.ops.BannedWords(words=["darn"]),
            synth.ops.Polite(backend=synth.backends.OpenAI(base_url="{llm_server.base_url}", model="test-model")),
        ])
        dataset = pipeline.run("answers.jsonl")
        print([row["messages"][-1]["content"] for row in dataset])
        print(pipeline.to_yaml())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "['Kindly: apple', 'Kindly: a cat']" in done.stdout
    assert "type: banned_words" in done.stdout and "type: polite" in done.stdout
