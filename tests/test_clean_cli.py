"""`synth filter`, `synth dedup`, `synth decontaminate` end to end on datasets on disk: outputs written,
images kept, rejects and the report inside the output folder, tables printed, and bad inputs as one clear
error line with nothing written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from synth.io import read_dataset
from synth.records import ImagePart, Message, Sample, TextPart, load_meta, samples_to_dataset
from tests.cli_helpers import one_line_error, run_cli

STORY = (
    "Once upon a time a small fox lived near the river bank and every morning it walked to the old mill to "
    "watch the miller grind the wheat into fine white flour for the village bakery"
)


def png(width: int, height: int, colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def text_jsonl(path: Path) -> Path:
    rows = [
        ("t0", "Tell me a story.", STORY),
        ("t1", "tell me a STORY.", STORY),  # exact duplicate of t0
        ("t2", "Tell me a story.", STORY + " The end."),  # near duplicate of t0
        ("t3", "What is 2+2?", "N/A"),
        ("t4", "Name the largest planet in our solar system, please.", "Jupiter is the largest planet."),
    ]
    path.write_text(
        "\n".join(
            json.dumps({"id": i, "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}], "meta": json.dumps({"source": "demo"})})
            for i, u, a in rows
        )
        + "\n"
    )
    return path


def image_dataset(path: Path) -> Path:
    def sample(question: str, answer: str, image: bytes) -> Sample:
        return Sample(
            messages=[
                Message(role="user", content=[ImagePart(), TextPart(text=question)]),
                Message(role="assistant", content=[TextPart(text=answer)]),
            ],
            images=[image],
            meta={"source": "shapes"},
        )

    samples = [
        sample("What colour is the square?", "Green.", png(64, 64)),
        sample("What colour is the strip?", "Green.", png(300, 10)),
        sample("Describe the picture.", "TODO", png(64, 64, (200, 0, 0))),
    ]
    samples_to_dataset(samples).save_to_disk(str(path))
    return path


def rejects(out: Path) -> dict[str, dict]:
    file = out / "rejects.jsonl"
    return {json.loads(line)["id"]: json.loads(line) for line in file.read_text().splitlines()}


def test_filter_chain_on_an_image_dataset(tmp_path):
    source = image_dataset(tmp_path / "src")
    out = tmp_path / "out"
    result = run_cli("filter", source, "--out", out, "--filter", "placeholder", "--filter", "image_size:max_aspect=4,min_width=16")
    assert result.exit_code == 0, result.output
    assert "dropped: placeholder_answer" in result.output and "dropped: bad_aspect" in result.output
    assert "1 (33.3%)" in result.output
    kept = read_dataset(str(out))
    assert len(kept) == 1 and kept[0]["images"][0].size == (64, 64)
    assert kept.features == read_dataset(str(source)).features
    reasons = {r["reason"] for r in rejects(out).values()}
    assert reasons == {"placeholder_answer", "bad_aspect"}


def test_filter_config_file_and_overwrite(tmp_path):
    source = text_jsonl(tmp_path / "data.jsonl")
    config = tmp_path / "chain.yaml"
    config.write_text("filters:\n  - placeholder\n  - length: {min_answer_words: 3}\n  - dedup: {threshold: 0.8}\n")
    out = tmp_path / "out"
    result = run_cli("filter", source, "--out", out, "--config", config)
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_dataset(str(out))] == ["t0", "t4"]
    assert load_meta(read_dataset(str(out))[0]["meta"]) == {"source": "demo"}
    one_line_error(run_cli("filter", source, "--out", out, "--config", config), "already exists", "--overwrite")
    result = run_cli("filter", source, "--out", out, "--filter", "length", "--overwrite")
    assert result.exit_code == 0
    assert len(read_dataset(str(out))) == 5
    # A run that drops nothing leaves no stale rejects file from the earlier run.
    assert not (out / "rejects.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == 5 and report["kept"] == 5 and report["stages"][0]["name"] == "length"


def test_dedup_command_names_twins(tmp_path):
    source = text_jsonl(tmp_path / "data.jsonl")
    out = tmp_path / "dedup"
    result = run_cli("dedup", source, "--out", out, "--threshold", "0.8", "--shingle", "5", "--num-perm", "128")
    assert result.exit_code == 0, result.output
    assert "9 bands x 13 rows" in result.output.replace("\n", " ")
    assert [r["id"] for r in read_dataset(str(out))] == ["t0", "t3", "t4"]
    lines = rejects(out)
    assert lines["t1"]["reason"] == "exact_duplicate" and lines["t1"]["detail"] == "twin=t0 source=demo"
    assert lines["t2"]["reason"] == "near_duplicate" and lines["t2"]["detail"].startswith("twin=t0 ")
    result = run_cli("dedup", source, "--out", tmp_path / "exact", "--exact-only", "--no-images")
    assert [r["id"] for r in read_dataset(str(tmp_path / "exact"))] == ["t0", "t2", "t3", "t4"]


def test_a_one_value_flag_given_twice_is_an_error_not_the_last_one_winning(tmp_path):
    source = text_jsonl(tmp_path / "data.jsonl")
    result = run_cli("dedup", source, "--out", tmp_path / "dedup", "--threshold", "0.5", "--threshold", "0.9")
    one_line_error(result, "--threshold given 2 times (0.5, 0.9): it takes one value")
    assert not (tmp_path / "dedup").exists()


def test_decontaminate_command_reports_per_benchmark(tmp_path):
    source = text_jsonl(tmp_path / "data.jsonl")
    bench = tmp_path / "planets_test.jsonl"
    bench.write_text(json.dumps({"id": "p7", "question": "Name the largest planet in our solar system"}) + "\n")
    out = tmp_path / "clean"
    result = run_cli("decontaminate", source, "--benchmark", bench, "--out", out, "--ngram", "13")
    assert result.exit_code == 0, result.output
    assert "planets_test.jsonl" in result.output and "hits per benchmark" in result.output
    assert len(read_dataset(str(out))) == 4
    assert rejects(out)["t4"]["detail"].startswith("benchmark=planets_test.jsonl item=p7 ")
    one_line_error(run_cli("decontaminate", source, "--benchmark", tmp_path / "nope.jsonl", "--out", tmp_path / "x"), "benchmark file not found")


def test_judge_filter_through_the_test_server(tmp_path, llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script(lambda body: json.dumps({"score": 9 if "Jupiter" in json.dumps(body) else 3, "reason": "r"}))
    source = text_jsonl(tmp_path / "data.jsonl")
    out = tmp_path / "judged"
    result = run_cli(
        "filter", source, "--out", out, "--filter", "judge:threshold=7",
        "--model", "test-model", "--base-url", llm_server.base_url, "--no-cache",
    )
    assert result.exit_code == 0, result.output
    kept = read_dataset(str(out))
    assert [r["id"] for r in kept] == ["t4"]
    assert load_meta(kept[0]["meta"]) == {"source": "demo", "scores": {"quality": 9}, "score_reasons": {"quality": "r"}}
    assert llm_server.request_count == 5
    assert "LLM usage" in result.output
    one_line_error(run_cli("filter", source, "--out", tmp_path / "j2", "--filter", "judge", "--backend", "openai"), "needs a model", "--model")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--filter", "lenght"], ["unknown filter 'lenght'", "valid filters:", "length"]),
        (["--filter", "length:min_answer_wrds=3"], ["min_answer_wrds: unknown key", "valid options for 'length'"]),
        (["--filter", "length:min_answer_words=many"], ["filter 'length'", "min_answer_words"]),
        (["--filter", "length:min_answer_words"], ["expected key=value"]),
        ([], ["no filters given"]),
    ],
)
def test_bad_filter_arguments_are_one_clear_line(tmp_path, args, fragments):
    source = text_jsonl(tmp_path / "data.jsonl")
    one_line_error(run_cli("filter", source, "--out", tmp_path / "o", *args), *fragments)
    assert not (tmp_path / "o").exists()


def test_bad_datasets_and_configs_are_one_clear_line(tmp_path):
    one_line_error(run_cli("dedup", tmp_path / "missing.jsonl", "--out", tmp_path / "o"), "no such file")
    one_line_error(run_cli("dedup", text_jsonl(tmp_path / "d.jsonl"), "--out", tmp_path / "o", "--threshold", "1.5"), "threshold")
    bad = tmp_path / "bad.yaml"
    bad.write_text("filters: {length: 1}\n")
    one_line_error(run_cli("filter", tmp_path / "d.jsonl", "--out", tmp_path / "o", "--config", bad), "bad.yaml", "expected a list")


def test_filter_help_lists_filters(tmp_path):
    result = run_cli("filter", text_jsonl(tmp_path / "d.jsonl"), "--out", tmp_path / "o", "--filter", "help")
    assert result.exit_code == 0
    for name in ("length", "repetition", "placeholder", "image_size", "image_tokens", "dedup", "decontaminate", "judge"):
        assert f"{name}:" in result.output


def test_filter_help_needs_no_dataset_and_no_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("filter", "--filter", "help")
    assert result.exit_code == 0, result.output
    assert "length:" in result.output and "judge:" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written
    one_line_error(run_cli("filter", "--filter", "length"), "synth filter needs DATASET and --out/-o OUT")
    one_line_error(run_cli("filter", text_jsonl(tmp_path / "d.jsonl"), "-f", "length"), "synth filter needs --out/-o OUT")


def test_raw_rows_without_ids_or_messages(tmp_path):
    source = tmp_path / "web.jsonl"
    captions = ["A red bus parked beside a busy city street at night", "a red bus parked beside a busy city street at night!", "Two dogs play in the snow"]
    source.write_text("\n".join(json.dumps({"caption": c, "url": f"http://x/{i}"}) for i, c in enumerate(captions)) + "\n")
    out = tmp_path / "out"
    result = run_cli("dedup", source, "--out", out)
    assert result.exit_code == 0, result.output
    assert [r["url"] for r in read_dataset(str(out))] == ["http://x/0", "http://x/2"]
    assert rejects(out) == {"row 2": {"id": "row 2", "stage": "dedup", "reason": "near_duplicate", "detail": "twin=row 1 jaccard=1.00"}}


def test_failure_mid_run_leaves_no_output_and_no_rejects(tmp_path):
    from synth.clean.apply import clean_dataset
    from synth.clean.heuristics import PlaceholderFilter
    from synth.errors import SynthError

    class Explodes(PlaceholderFilter):
        def check(self, record):
            if record["id"] == "t4":
                raise SynthError("boom at t4")
            return super().check(record)

    source = text_jsonl(tmp_path / "data.jsonl")
    out = tmp_path / "out"
    with pytest.raises(SynthError, match="boom"):
        clean_dataset(source, out, [PlaceholderFilter(), Explodes(placeholders=["zzz"])])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]
