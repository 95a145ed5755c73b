"""Bad input to the generating commands (`generate`, `evolve`): broken images, paths that leave the
dataset folder, empty datasets, peer layouts run from another directory, unusable servers, and a run
killed midway. Real files on disk and the loopback OpenAI-compatible test server (a fixture, not a model)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from synth.data import open_source
from synth.llm.testing import image_urls
from tests.cli_helpers import one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), COLOURS[colour]).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), COLOURS[colour]).save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg("red")
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(png("red"))
    data[data.index(b"IDAT") + 8] ^= 0xFF  # the chunk's checksum no longer matches
    return bytes(data)


def colour_of(url: str) -> str:
    """The colour name of the image inside a data URL (what the server was shown)."""
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    pixel = image.getpixel((image.width // 2, image.height // 2))
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], pixel)))


def trl_dataset(folder: Path, images: dict[str, bytes | str | None], questions: list[str] | None = None) -> Path:
    """A TRL-style SFT JSONL: content parts, image parts without a ``text`` key, images as relative paths.
    `images` maps each row's image path to the bytes to write there (None: write nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, data) in enumerate(images.items()):
        if isinstance(data, bytes):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        question = questions[i] if questions else f"What colour is the picture {i}?"
        rows.append({
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            "images": [path],
        })
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train


def scenes(folder: Path, images: dict[str, bytes | str | None]) -> Path:
    """A seed JSONL for MMEvol: an image path and a caption per row."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, data) in enumerate(images.items()):
        if isinstance(data, bytes):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        rows.append({"id": f"scene-{i}", "image": path, "caption": f"A coloured rectangle, number {i}."})
    seeds = folder / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return seeds


def llm_args(server) -> list[str]:
    return ["--base-url", server.base_url, "-m", "test-model", "--no-cache"]


def nothing_written(parent: Path, name: str = "out") -> None:
    """No output, no sidecar beside it, no temp folder left behind."""
    assert [p.name for p in parent.iterdir() if p.name.startswith((name, f".{name}"))] == []


def answer_with_colour(body: dict) -> str:
    urls = image_urls(body)
    return f"It is {colour_of(urls[0])}." if urls else "There is no picture."


# ---------------------------------------------------------------- broken images


@pytest.mark.parametrize("name, data, message", [
    ("img/1.jpg", truncated_jpeg(), "Truncated"),
    ("img/1.png", corrupt_png(), "broken PNG file"),
])
def test_generate_refuses_a_broken_image_before_any_request(tmp_path, llm_server, name, data, message):
    train = trl_dataset(tmp_path / "data", {"img/0.jpg": jpeg("red"), name: data})
    result = run_cli("generate", train, "-o", tmp_path / "out", *llm_args(llm_server))
    line = one_line_error(result, "row 2", name, message)
    assert "record" in line
    assert llm_server.request_count == 0
    nothing_written(tmp_path)


@pytest.mark.parametrize("name, data, message", [
    ("img/1.jpg", truncated_jpeg(), "Truncated"),
    ("img/1.png", corrupt_png(), "broken PNG file"),
])
def test_evolve_mmevol_refuses_a_broken_image(tmp_path, llm_server, name, data, message):
    seeds = scenes(tmp_path / "data", {"img/0.png": png("red"), name: data})
    result = run_cli("evolve", seeds, "--method", "mmevol", "-o", tmp_path / "out", "--rounds", "1", *llm_args(llm_server))
    one_line_error(result, "scene-1", name, message)
    assert llm_server.request_count == 0
    nothing_written(tmp_path)


def test_evolve_mmevol_refuses_a_truncated_jpeg_in_a_saved_dataset(tmp_path, llm_server):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    rows = {"id": ["ok", "cut"], "image": [{"bytes": jpeg("red"), "path": None}, {"bytes": truncated_jpeg(), "path": None}],
            "caption": ["a red rectangle", "a cut-off file"]}
    Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    result = run_cli("evolve", tmp_path / "saved", "--method", "mmevol", "-o", tmp_path / "out", *llm_args(llm_server))
    one_line_error(result, "row 2", "cut", "Truncated")
    assert llm_server.request_count == 0
    nothing_written(tmp_path)


# ---------------------------------------------------------------- paths outside the dataset folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A real image outside the dataset folder, and a symlink to it from inside."""
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg("green"))
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "link.jpg").symlink_to(secret)
    return secret


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_image_paths_outside_the_dataset_folder_are_refused_and_never_uploaded(tmp_path, llm_server, outside, kind):
    path = {"dotdot": "../../etc/passwd", "absolute": str(outside), "symlink": "img/link.jpg"}[kind]
    train = trl_dataset(tmp_path / "data", {"img/0.jpg": jpeg("red"), path: None})
    result = run_cli("generate", train, "-o", tmp_path / "out", *llm_args(llm_server))
    one_line_error(result, "row 2", "points outside the dataset folder", path)
    assert llm_server.request_count == 0  # nothing went to the server, least of all the file
    nothing_written(tmp_path)

    seeds = scenes(tmp_path / "data", {"img/0.jpg": None, path: None})
    result = run_cli("evolve", seeds, "--method", "mmevol", "-o", tmp_path / "out", *llm_args(llm_server))
    one_line_error(result, "scene-1", "points outside the dataset folder")
    assert llm_server.request_count == 0
    nothing_written(tmp_path)


# ---------------------------------------------------------------- relative paths, another directory


def test_relative_image_paths_resolve_against_the_dataset_not_the_working_directory(tmp_path, llm_server, monkeypatch):
    originals = {"img/0.jpg": jpeg("red"), "img/sub/1.jpg": jpeg("blue"), "img/2.png": png("green")}
    train = trl_dataset(tmp_path / "data", originals)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    llm_server.script(answer_with_colour)
    result = run_cli("generate", os.path.relpath(train, elsewhere), "-o", "out", *llm_args(llm_server))
    assert result.exit_code == 0, result.output
    assert sorted(colour_of(image_urls(b)[0]) for b in llm_server.requests) == ["blue", "green", "red"]

    records = list(open_source(elsewhere / "out").records())
    assert [r["messages"][-1]["content"][0]["text"] for r in records] == ["It is red.", "It is blue.", "It is green."]
    # The images are stored as they were given: a JPEG stays a JPEG, byte for byte.
    assert [r["images"][0]["bytes"] for r in records] == list(originals.values())
    assert {p.name for p in (elsewhere / "out").iterdir()} >= {"usage.json", "dataset_info.json", "state.json"}


def test_trl_jsonl_from_another_directory_in_a_subprocess_without_datasets_bars(tmp_path, llm_server):
    """The command as a user runs it: another working directory, datasets' own bars not silenced by the
    environment (synth must silence them itself)."""
    train = trl_dataset(tmp_path / "data", {"img/0.jpg": jpeg("red"), "img/1.jpg": jpeg("blue")})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    llm_server.script(answer_with_colour)
    env = {k: v for k, v in os.environ.items() if k != "HF_DATASETS_DISABLE_PROGRESS_BARS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "generate", os.path.relpath(train, elsewhere), "-o", "out", *llm_args(llm_server)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "wrote 2 records to out" in output
    for bar in ("Saving the dataset", "Generating train split", "Map", "it/s]", "examples/s"):
        assert bar not in output, output
    records = list(open_source(elsewhere / "out").records())
    assert [r["messages"][-1]["content"][0]["text"] for r in records] == ["It is red.", "It is blue."]


# ---------------------------------------------------------------- empty datasets


def test_empty_datasets_are_one_clear_error(tmp_path, llm_server):
    from datasets import Dataset

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args in (["generate", empty], ["evolve", empty], ["evolve", empty, "--method", "mmevol"]):
        one_line_error(run_cli(*args, "-o", tmp_path / "out", *llm_args(llm_server)), str(empty), "the file is empty")
    Dataset.from_dict({"instruction": []}).save_to_disk(str(tmp_path / "none"), num_shards=1)
    for args in (["generate", tmp_path / "none"], ["evolve", tmp_path / "none"]):
        one_line_error(run_cli(*args, "-o", tmp_path / "out", *llm_args(llm_server)), "the dataset is empty (0 rows)")
    assert llm_server.request_count == 0
    nothing_written(tmp_path)


# ---------------------------------------------------------------- servers that cannot serve


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there now


@pytest.mark.parametrize("fault, cause", [
    ("dead", "connection refused"),
    ("401", "401"),
    ("non_json", "not JSON"),
    ("400", "every LLM request failed (3; http_400: 3)"),  # answers, but never usably: no fast fail
])
@pytest.mark.parametrize("command", [["generate"], ["evolve"], ["evolve", "--method", "mmevol"]])
def test_unusable_servers_end_the_command_with_the_cause(tmp_path, llm_server, fault, cause, command):
    if command[-1] == "mmevol":
        data = scenes(tmp_path / "data", {f"img/{i}.png": png("red") for i in range(3)})
    else:
        data = tmp_path / "tasks.jsonl"
        data.write_text("".join(json.dumps({"instruction": f"Say hello number {i}."}) + "\n" for i in range(3)))
    url = dead_url() if fault == "dead" else llm_server.base_url
    if fault in ("401", "400"):
        llm_server.fault("status", status=int(fault))
    elif fault == "non_json":
        llm_server.fault("non_json")
    rounds = ["--rounds", "1"] if command[0] == "evolve" else []
    started = time.monotonic()
    result = run_cli(command[0], data, *command[1:], *rounds, "-o", tmp_path / "out", "--base-url", url,
                     "-m", "test-model", "--no-cache")
    one_line_error(result, cause)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault, cause", [("dead", "connection refused"), ("401", "401")])
def test_self_instruct_against_an_unusable_server_writes_nothing(tmp_path, llm_server, fault, cause):
    url = dead_url() if fault == "dead" else llm_server.base_url
    if fault == "401":
        llm_server.fault("status", status=401)
    result = run_cli("self-instruct", "-o", tmp_path / "out", "--count", "4", "--base-url", url, "-m", "test-model",
                     "--no-cache")
    one_line_error(result, cause)
    nothing_written(tmp_path)


# ---------------------------------------------------------------- kill -9 midway


def test_sigkill_midway_leaves_the_previous_output_whole_and_the_rerun_resumes(tmp_path, llm_server_factory):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"instruction": f"Describe the number {i} in one line."}) + "\n" for i in range(80)))
    out, cache = tmp_path / "out", tmp_path / "cache"
    fast = llm_server_factory()
    fast.script("the previous answer")
    first = run_cli("generate", tasks, "-o", out, "--base-url", fast.base_url, "-m", "test-model", "--no-cache")
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    slow = llm_server_factory(latency=0.25)
    slow.script(lambda body: "the new answer")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "synth", "generate", str(tasks), "-o", str(out), "--overwrite", "--base-url",
            slow.base_url, "-m", "test-model", "--concurrency", "2", "--cache-dir", str(cache)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while slow.request_count < 10:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no requests arrived"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    sent_before_kill = slow.request_count

    # The previous output is whole and unchanged; nothing of the killed run is at the final path.
    assert {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert not (out / "failures.jsonl").exists() and not (out / "rejects.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.")] == []
    assert {r["messages"][-1]["content"] for r in open_source(out).records()} == {"the previous answer"}

    # The rerun sends only what the killed run had not got back (the cache committed each answer).
    slow.reset()
    slow.script(lambda body: "the new answer")
    again = run_cli("generate", tasks, "-o", out, "--overwrite", "--base-url", slow.base_url, "-m", "test-model",
                    "--concurrency", "8", "--cache-dir", cache)
    assert again.exit_code == 0, again.output
    assert 80 - sent_before_kill <= slow.request_count < 80
    assert {r["messages"][-1]["content"] for r in open_source(out).records()} == {"the new answer"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # the killed run's temp is gone
