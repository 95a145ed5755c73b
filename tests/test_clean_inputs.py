"""What users hand `synth filter`, `synth dedup` and `synth decontaminate`: peer layouts (TRL JSONL with
content parts and relative image paths), runs from another directory, and bad input — broken images,
paths leading out of the dataset folder, empty datasets, duplicate YAML keys, dead or broken LLM servers.
Bad input is one clear `error:` line, exit 1, and nothing written."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from PIL import Image

from synth.io import read_dataset
from synth.records import load_meta
from tests.cli_helpers import one_line_error, run_cli

ANSWERS = ["The square is green.", "The square is red.", "The square is blue."]


def jpeg(colour, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (5, 5, 20, 20))
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(colour, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def trl_row(i: int, image: str, answer: str | None = None) -> dict:
    """TRL's conversational vision layout: image parts without a `text` key, images as relative paths."""
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"What colour is the square in picture {i}?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer or ANSWERS[i % 3]}]},
        ],
        "images": [image],
    }


def trl_dataset(folder: Path, rows: list[dict] | None = None, images: dict[str, bytes] | None = None) -> Path:
    """`folder/data.jsonl` with `folder/img/*.jpg`; by default three pictures plus an exact duplicate row."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    images = images or {"img/0.jpg": jpeg((0, 160, 0)), "img/1.jpg": jpeg((200, 0, 0)), "img/2.jpg": jpeg((0, 0, 200))}
    for name, data in images.items():
        (folder / name).write_bytes(data)
    rows = rows if rows is not None else [trl_row(0, "img/0.jpg"), trl_row(1, "img/1.jpg"), trl_row(2, "img/2.jpg"), trl_row(0, "img/0.jpg")]
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp folder left


# ---------------------------------------------------------------- TRL JSONL, from another directory


def test_dedup_reads_trl_jsonl_with_relative_images_from_another_directory(tmp_path, monkeypatch):
    source = trl_dataset(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # img/0.jpg exists only relative to the dataset's folder
    out = tmp_path / "dedup"
    result = run_cli("dedup", source, "--out", out)
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(out))
    assert len(kept) == 3
    assert [r["messages"][1]["content"][0]["text"] for r in kept] == ANSWERS
    # SFT in, SFT out: image parts and the pictures themselves, embedded and still JPEG.
    assert kept[0]["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert kept[1]["images"][0].format == "JPEG" and kept[1]["images"][0].getpixel((30, 30)) == pytest.approx((200, 0, 0), abs=8)
    duplicate = json.loads((out / "rejects.jsonl").read_text())
    assert duplicate["reason"] == "exact_duplicate" and duplicate["detail"] == f"twin={kept[0]['id']}"
    assert json.loads((out / "report.json").read_text())["layout"] == "messages"


def test_filter_reads_trl_jsonl(tmp_path, monkeypatch):
    rows = [trl_row(0, "img/0.jpg"), trl_row(1, "img/1.jpg", answer="N/A"), trl_row(2, "img/2.jpg")]
    source = trl_dataset(tmp_path / "data", rows)
    monkeypatch.chdir(tmp_path)
    result = run_cli("filter", "data/data.jsonl", "--out", "clean", "--filter", "placeholder", "--filter", "image_size:min_width=32")
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(tmp_path / "clean"))
    assert [r["messages"][1]["content"][0]["text"] for r in kept] == [ANSWERS[0], ANSWERS[2]]
    assert [line["reason"] for line in map(json.loads, (tmp_path / "clean" / "rejects.jsonl").read_text().splitlines())] == [
        "placeholder_answer"
    ]
    assert source.exists()


def test_judge_reads_trl_jsonl_and_sends_the_images(tmp_path, llm_server, monkeypatch):
    from synth.llm.testing import image_urls

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = trl_dataset(tmp_path / "data", [trl_row(0, "img/0.jpg"), trl_row(1, "img/1.jpg")])
    monkeypatch.chdir(tmp_path / "data" / "img")
    llm_server.script(lambda body: json.dumps({"score": 9 if "picture 0" in json.dumps(body) else 2, "reason": "r"}))
    out = tmp_path / "judged"
    result = run_cli("filter", source, "--out", out, "--filter", "judge", "--model", "test-model",
                     "--base-url", llm_server.base_url, "--no-cache")
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(out))
    assert len(kept) == 1 and load_meta(kept[0]["meta"])["scores"] == {"quality": 9}
    assert llm_server.request_count == 2
    assert all(len(image_urls(body)) == 1 for body in llm_server.requests)
    usage = json.loads((out / "usage.json").read_text())
    assert usage["command"] == "filter" and usage["model"] == "test-model" and usage["usage"]["requests"] == 2


def test_preference_pairs_stay_preference_pairs(tmp_path):
    rows = [{"prompt": "What is 2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
            {"prompt": "What is 2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
            {"prompt": "Capital of France?", "chosen": "Paris is the capital.", "rejected": "Lyon."}]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("dedup", source, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(tmp_path / "out"))
    assert kept.column_names == ["id", "prompt", "chosen", "rejected", "meta"] and len(kept) == 2
    assert kept[1]["chosen"] == [{"role": "assistant", "content": "Paris is the capital."}]


def test_raw_rows_with_image_paths_resolve_in_the_dataset_folder(tmp_path, monkeypatch):
    folder = tmp_path / "web"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics" / "big.png").write_bytes(png((0, 0, 0), (64, 64)))
    (folder / "pics" / "tiny.png").write_bytes(png((0, 0, 0), (8, 8)))
    rows = [{"image": "pics/big.png", "caption": "a black square"}, {"image": "pics/tiny.png", "caption": "a dot"}]
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    result = run_cli("filter", folder / "captions.jsonl", "--out", tmp_path / "out", "--filter", "image_size:min_width=16")
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(tmp_path / "out"))
    assert kept.column_names == ["image", "caption"]  # raw in, raw out: the columns stay, images embedded
    assert kept[0]["caption"] == "a black square" and kept[0]["image"].size == (64, 64)
    assert json.loads((tmp_path / "out" / "rejects.jsonl").read_text())["id"] == "row 2"


def test_raw_image_paths_outside_the_dataset_folder_are_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes(png((1, 2, 3)))
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "captions.jsonl").write_text(json.dumps({"image": "../secret.png", "caption": "a secret"}) + "\n")
    out = tmp_path / "out"
    one_line_error(run_cli("filter", folder / "captions.jsonl", "--out", out, "--filter", "image_size"),
                   "row 1", "'../secret.png' points outside the dataset folder")
    nothing_written(out)


# ---------------------------------------------------------------- bad images


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]  # cut inside the scan data: PIL's verify() still passes this


def corrupt_png() -> bytes:
    data = bytearray(png((10, 200, 30), (64, 64)))
    start = data.index(b"IDAT") + 6
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    return bytes(data)


@pytest.mark.parametrize("command", [["dedup"], ["filter", "--filter", "length"]])
@pytest.mark.parametrize(
    "name, data, fragment",
    [("img/bad.jpg", truncated_jpeg(), "truncated JPEG"), ("img/bad.png", corrupt_png(), "corrupt image")],
)
def test_broken_images_are_one_error_line_and_nothing_written(tmp_path, command, name, data, fragment):
    images = {"img/0.jpg": jpeg((0, 160, 0)), name: data}
    source = trl_dataset(tmp_path / "data", [trl_row(0, "img/0.jpg"), trl_row(1, name)], images)
    out = tmp_path / "out"
    line = one_line_error(run_cli(command[0], source, "--out", out, *command[1:]), fragment, name, "row 2")
    assert "Traceback" not in line
    nothing_written(out)


@pytest.mark.parametrize("command", [["dedup"], ["filter", "--filter", "length"]])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_image_paths_outside_the_dataset_folder_are_refused(tmp_path, command, kind):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png((1, 2, 3)))
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    if kind == "dotdot":
        path = "../../etc/passwd"
    elif kind == "absolute":
        path = str(secret)
    else:
        (folder / "img" / "link.png").symlink_to(secret)
        path = "img/link.png"
    source = trl_dataset(folder, [trl_row(0, "img/0.jpg"), trl_row(1, path)])
    out = tmp_path / "out"
    one_line_error(run_cli(command[0], source, "--out", out, *command[1:]), "points outside the dataset folder", path)
    nothing_written(out)


# ---------------------------------------------------------------- empty input


def empty_saved_dataset(path: Path) -> Path:
    from synth.data import write_records

    write_records(iter([]), path, kind="sft", multimodal=False)
    return path


@pytest.mark.parametrize("command", [["dedup"], ["filter", "--filter", "length"], ["decontaminate", "--benchmark", "BENCH"]])
@pytest.mark.parametrize("kind", ["empty_file", "blank_file", "empty_dataset"])
def test_an_empty_dataset_is_the_same_clear_error_everywhere(tmp_path, command, kind):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "a benchmark question with more than eight words in it"}) + "\n")
    if kind == "empty_dataset":
        source, fragment = empty_saved_dataset(tmp_path / "empty"), "the dataset is empty"
    else:
        source = tmp_path / "empty.jsonl"
        source.write_text("" if kind == "empty_file" else "\n  \n")
        fragment = "the file is empty"
    out = tmp_path / "out"
    args = [str(bench) if a == "BENCH" else a for a in command[1:]]
    one_line_error(run_cli(command[0], source, "--out", out, *args), fragment, str(source))
    nothing_written(out)


# ---------------------------------------------------------------- filter chain YAML


def test_a_duplicate_key_in_a_filter_chain_is_an_error(tmp_path):
    source = trl_dataset(tmp_path / "data")
    chain = tmp_path / "chain.yaml"
    chain.write_text("filters:\n  - length:\n      min_answer_words: 3\n      min_answer_words: 5\n  - dedup\n")
    out = tmp_path / "out"
    one_line_error(run_cli("filter", source, "--out", out, "--config", chain), f"{chain}:4: invalid filter config: filters.0.length.min_answer_words: duplicate key")
    nothing_written(out)


# ---------------------------------------------------------------- the judge against broken servers


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def judge(source: Path, out: Path, url: str, *extra: str):
    return run_cli("filter", source, "--out", out, "--filter", "judge", "--model", "test-model", "--base-url", url,
                   "--no-cache", *extra)


def text_rows(path: Path, n: int = 4) -> Path:
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_judge_against_a_dead_server_exits_non_zero_with_the_cause(tmp_path, monkeypatch):
    import time

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url = dead_url()
    start = time.monotonic()
    line = one_line_error(judge(text_rows(tmp_path / "d.jsonl"), tmp_path / "out", url), "127.0.0.1", "connection refused")
    assert time.monotonic() - start < 30
    assert "--base-url" in line
    nothing_written(tmp_path / "out")


@pytest.mark.parametrize("fault, fragment", [("401", "401"), ("html", "HTML, not JSON")])
def test_judge_against_a_misconfigured_server_exits_non_zero_with_the_cause(tmp_path, llm_server, monkeypatch, fault, fragment):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.fault(fault)
    one_line_error(judge(text_rows(tmp_path / "d.jsonl"), tmp_path / "out", llm_server.base_url), fragment)
    nothing_written(tmp_path / "out")


def test_judge_whose_every_reply_is_unparseable_exits_non_zero(tmp_path, llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script("I would rate this highly.")  # never JSON, whatever the re-asks say
    one_line_error(judge(text_rows(tmp_path / "d.jsonl"), tmp_path / "out", llm_server.base_url),
                   "judge: every LLM request failed", "unparseable: 4")
    nothing_written(tmp_path / "out")


def test_some_failed_judge_requests_go_to_failures_not_rejects(tmp_path, llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # Each item stands alone: out of range, malformed, low and good scores in one batch.
    replies = {"Question 0": '{"score": 11}', "Question 1": "no JSON here", "Question 2": '{"score": 2, "reason": "bad"}',
               "Question 3": '{"score": 0.0, "reason": "empty"}', "Question 4": '{"score": 8, "reason": "good"}',
               "Question 5": '{"score": 10, "reason": "great"}'}
    llm_server.script(replies)
    out = tmp_path / "out"
    result = judge(text_rows(tmp_path / "d.jsonl", 6), out, llm_server.base_url)
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_dataset(str(out))] == ["r4", "r5"]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == ["r0", "r1"] and {f["reason"] for f in failures} == {"unparseable"}
    rejected = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejected) == ["r2", "r3"] and {r["reason"] for r in rejected} == {"low_score"}
    assert "2 records failed" in " ".join(result.output.split()) and "failed: unparseable" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == 2 and report["stages"][0]["failed"] == {"unparseable": 2}
    # Failures are not cached: a second run (same cache) asks for them again.
    before = llm_server.request_count
    result = run_cli("filter", tmp_path / "d.jsonl", "--out", out, "--overwrite", "--filter", "judge", "--model", "test-model",
                     "--base-url", llm_server.base_url)
    assert result.exit_code == 0, result.output
    first = llm_server.request_count - before
    result = run_cli("filter", tmp_path / "d.jsonl", "--out", out, "--overwrite", "--filter", "judge", "--model", "test-model",
                     "--base-url", llm_server.base_url)
    assert result.exit_code == 0, result.output
    assert llm_server.request_count - before - first == first - 4  # only the two failed items, with their re-asks
