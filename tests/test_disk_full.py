"""A full disk: every command that writes says so in one line (what it was writing, what to do), leaves
nothing half-written and no temp file behind, and a later run in the same place works as if nothing had
happened. The disk fills on purpose (tests/disk_full.py: writes under one folder hit ENOSPC after a byte
budget); one test uses a real 1 MB tmpfs where mounting is allowed."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.cli_helpers import one_line_error, run_cli
from tests.disk_full import fill_disk, leftovers
from tests.publish_fixtures import MIX_RECIPE, scripted_model

DEMO_RECIPE = """\
name: full
shard_size: 4
stages:
  - {type: demo, name: shapes, count: 10}
  - {type: adapt, name: vqa, input: shapes, template: vqa_short}
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    for args in (("demo-data", root / "shapes", "--count", 8, "--size", 64, "--seed", 3),
                 ("adapt", root / "shapes", "-t", "vqa_short", "-o", root / "vqa"),
                 ("adapt", root / "shapes", "-t", "caption_brief", "-o", root / "captions")):
        assert run_cli(*args).exit_code == 0
    (root / "mix.yaml").write_text(MIX_RECIPE.replace("total: 30", "total: 10"))
    (root / "recipe.yaml").write_text(DEMO_RECIPE)
    with open(root / "tasks.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"instruction": f"Name a colour number {i}."}) + "\n")
    (root / "bench.jsonl").write_text(json.dumps({"question": "What is the capital of France and why?"}) + "\n")
    return root


def commands(inputs, full, server):
    """Each command writing under `full`: (args, what the error line names, the option that moves it)."""
    out = full / "out"
    llm = ["--base-url", server.base_url, "--model", "test-model", "--no-cache"]
    return {
        "demo-data": (["demo-data", out, "--count", 4, "--size", 64], out, "OUT"),
        "adapt": (["adapt", inputs / "shapes", "-t", "vqa_short", "-o", out], out, "-o"),
        "filter": (["filter", inputs / "vqa", "-o", out, "--filter", "length"], out, "-o"),
        "dedup": (["dedup", inputs / "vqa", "-o", out], out, "-o"),
        "decontaminate": (["decontaminate", inputs / "vqa", "-o", out, "--benchmark", inputs / "bench.jsonl"], out, "-o"),
        "mix": (["mix", inputs / "mix.yaml", "-o", out], out, "-o"),
        "export-trl": (["export", inputs / "vqa", "-f", "trl", "-o", out], out, "-o"),
        "export-llamafactory": (["export", inputs / "vqa", "-f", "llamafactory", "-o", out], out, "-o"),
        "export-llava": (["export", inputs / "vqa", "-f", "llava", "-o", out], out, "-o"),
        "export-openai": (["export", inputs / "vqa", "-f", "openai", "-o", out], out, "-o"),
        "prefs": (["prefs", inputs / "vqa", "-s", "perturb", "--scenes", inputs / "shapes", "-o", out], out, "-o"),
        "push": (["push", inputs / "vqa", "--repo", "alice/shapes", "--to-dir", out], out, "--to-dir"),
        "report": (["report", inputs / "vqa", "-o", full / "report.html"], full / "report.html", "-o"),
        "generate": (["generate", inputs / "tasks.jsonl", "-o", out, *llm], out, "-o"),
        "evolve": (["evolve", inputs / "shapes", "--method", "mmevol", "-o", out, *llm, "--rounds", 1, "--limit", 3,
                    "--judge-batch-size", 1], out, "-o"),
        "run": (["run", inputs / "recipe.yaml", "--runs-dir", full / "runs"], full / "runs", "--runs-dir"),
    }


NAMES = ["demo-data", "adapt", "filter", "dedup", "decontaminate", "mix", "export-trl", "export-llamafactory",
         "export-llava", "export-openai", "prefs", "push", "report", "generate", "evolve", "run"]


@pytest.mark.parametrize("budget", [0, 1500])
@pytest.mark.parametrize("name", NAMES)
def test_every_command_says_disk_full_and_leaves_nothing(inputs, tmp_path, monkeypatch, llm_server, name, budget):
    full = tmp_path / "full"
    full.mkdir()
    args, target, option = commands(inputs, full, llm_server)[name]
    llm_server.script(scripted_model)  # MMEvol's evolutions and verdicts; an answer for anything else
    disk = fill_disk(monkeypatch, full, budget)
    result = run_cli(*args)
    assert disk.hits, "the command never met the full disk"
    line = one_line_error(result, "disk full while writing", "free space or choose another " + option)
    assert str(target) in line or str(full) in line, line
    monkeypatch.undo()
    if name == "run":  # a run folder keeps its lock, recipe and manifest; no temp file, no stage output
        assert [p for p in leftovers(full) if p.endswith(".tmp") or ".tmp/" in p] == []
        assert not (full / "runs" / "full" / "vqa").exists()
    else:
        assert leftovers(full) == []
    again = run_cli(*args)  # the same command, disk freed: works, nothing in its way
    assert again.exit_code == 0, again.output


def test_run_leaves_no_manifest_temp_and_its_next_run_is_clean(inputs, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    assert run_cli("run", inputs / "recipe.yaml", "--runs-dir", runs).exit_code == 0
    disk = fill_disk(monkeypatch, runs, 0)  # the manifest is the first thing a rerun writes
    line = one_line_error(run_cli("run", inputs / "recipe.yaml", "--runs-dir", runs), "disk full")
    assert disk.hits and "runs/full/" in line
    monkeypatch.undo()
    assert list(runs.rglob("*.tmp")) == []
    assert run_cli("run", inputs / "recipe.yaml", "--runs-dir", runs).exit_code == 0
    assert list(runs.rglob("*.tmp")) == []


@pytest.mark.parametrize("budget", [0, 64])
def test_train_writes_its_results_whole_or_not_at_all(tmp_path, monkeypatch, budget):
    from tests.train_helpers import adapted, fast_fields, tiny_text_model, write_recipe

    out = tmp_path / "full" / "model"
    recipe = write_recipe(tmp_path, **fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, limit=4))
    # 0: the output's .synth-output marker does not fit (before training). 64: it does; safetensors writes
    # the adapter natively (it lands); the first result file Python writes (adapter_config.json) fails
    disk = fill_disk(monkeypatch, tmp_path / "full", budget)
    result = run_cli("train", "sft", recipe, "-s", "max_steps=1", "-s", "lora.r=4")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]  # the step line, then the error
    line = lines[-1]
    assert [x for x in lines if x.startswith("error:")] == [line] and "disk full while writing" in line, lines
    assert "choose another output_dir" in line
    assert disk.hits and str(out) in line
    monkeypatch.undo()
    left = leftovers(tmp_path / "full")
    assert not any(p.endswith(".json") or p.endswith(".safetensors") or ".tmp" in p for p in left), left
    assert (out / ".synth-output").is_file() == (budget > 0)  # the run's own folder, marked at its start
    result = run_cli("train", "sft", recipe, "-s", "max_steps=1", "-s", "lora.r=4")
    assert result.exit_code == 0, result.output
    assert (out / "train_summary.json").is_file() and (out / "adapter_model.safetensors").is_file()


def test_a_wrapped_disk_full_is_found_and_the_error_crosses_processes():
    import pickle

    from datasets.exceptions import DatasetGenerationError

    from synth.errors import DiskFull, disk_full_error

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise DatasetGenerationError("An error occurred while generating the dataset") from inner
    except DatasetGenerationError as wrapped:
        assert disk_full_error(wrapped).errno == errno.ENOSPC
    assert disk_full_error(OSError("pyarrow: [errno 28] No space left on device")) is not None
    assert disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    assert disk_full_error(sqlite3.OperationalError("database or disk is full")) is not None
    assert disk_full_error(OSError(errno.EACCES, "Permission denied")) is None
    error = pickle.loads(pickle.dumps(DiskFull("/data/out")))
    assert str(error) == "disk full while writing /data/out: free space or choose another output location"


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk(inputs, tmpfs):
    """A real 1 MB filesystem: adapt (images) and run both fill it; in a subprocess, as a user runs synth."""
    big = tmpfs.parent / "big"
    assert run_cli("demo-data", big, "--count", 40, "--size", 256).exit_code == 0
    for args, option in ((["adapt", big, "-t", "vqa_short", "-o", tmpfs / "out"], "-o"),
                         (["run", _big_recipe(tmpfs.parent, big), "--runs-dir", tmpfs / "runs"],
                          "--runs-dir")):
        proc = subprocess.run([sys.executable, "-m", "synth", *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, "SYNTH_DEBUG": ""})
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        errors = [line for line in lines if line.startswith("error:")]  # run prints a line per stage before
        assert errors == lines[-1:] and errors[0].startswith("error: disk full while writing "), lines
        assert option in errors[0] and str(tmpfs) in errors[0], errors[0]
        assert [p for p in tmpfs.rglob("*") if ".tmp" in p.name] == []
    assert not (tmpfs / "out").exists()


def _big_recipe(folder, source):
    path = folder / "big.yaml"
    path.write_text(f"name: big\nstages:\n  - {{type: source, name: shapes, path: {source}}}\n"
                    "  - {type: adapt, name: vqa, input: shapes, template: vqa_short}\n")
    return path


def test_the_error_boundary_finds_a_wrapped_disk_full_anywhere():
    """Outside an output folder (a library's own cache, say): still one line, naming the file when the
    error does."""
    import typer
    from datasets.exceptions import DatasetGenerationError
    from typer.testing import CliRunner

    from synth.cli.common import handle_errors

    def fails():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/cache/part-0.arrow")
        except OSError as e:
            raise DatasetGenerationError("An error occurred while generating the dataset") from e

    app = typer.Typer()
    app.command()(handle_errors(fails))
    result = CliRunner().invoke(app, [])
    one_line_error(result, "disk full while writing /cache/part-0.arrow: free space or choose another -o")
