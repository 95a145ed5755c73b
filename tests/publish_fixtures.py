"""Real datasets for the push and report tests, made the way a user makes them (no tests in this file).

- ``shapes``: `synth demo-data` (12 images, 64 px);
- ``vqa`` / ``captions``: `synth adapt` with two template sets;
- ``mix``: `synth mix` over both (train + validation, a length filter, near-dedup);
- ``evolved``: `synth evolve --method mmevol`, 2 rounds, against the loopback test server with a scripted
  model and judge (the judge turns some evolutions down, so chains hold kept and eliminated steps);
- ``prefs``: a small image-text preference set written here with synth's own writer (the layout `synth prefs`
  writes: ratings, rationale, strategy in meta; rejects and report inside the folder). It is built in the
  test so these tests do not depend on the prefs engine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

MIX_RECIPE = """\
sources:
  - path: captions
    name: captions
    filters:
      - length: {min_answer_words: 3}
  - path: vqa
    name: vqa
    weight: 2
total: 30
dedup: {near: true, threshold: 0.9}
validation: 0.2
seed: 0
"""


def cli(*args) -> str:
    from synth.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output, result.output
    return result.output


def _digest(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def _user_text(body: dict) -> str:
    content = next(m for m in body["messages"] if m["role"] == "user")["content"]
    return content if isinstance(content, str) else "".join(p.get("text") or "" for p in content if p.get("type") == "text")


def scripted_model(body: dict) -> str:
    """A stand-in model for MMEvol: evolutions and verdicts in the requested schema; replies depend only on
    the prompt (so reruns give the same data). One judge reply in three turns the evolution down."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    text = _user_text(body)
    h = _digest(text)
    if "verdicts" in schema.get("properties", {}):
        improved = h % 3 != 0
        return json.dumps({"verdicts": [{
            "id": "1", "improved": improved, "score": 8 if improved else 3, "answerable_without_image": False,
            "reason": "needs a closer look at the image" if improved else "no harder than before <b>bold</b>",
        }]})
    return json.dumps({
        "question": f"Looking closely, which shape is nearest to mark {h % 997}?",
        "answer": "The red circle near the top",
        "steps": ["Find every shape.", "Compare the distances."],
        "objects": ["circle"], "skills": ["spatial"], "format": "open question",
    })


def write_prefs(sft_folder: Path, out: Path) -> Path:
    """A preference set from an adapted SFT set: chosen = the reference answer, rejected = a wrong one."""
    from synth.data import OutputFolder, read_records, write_records

    records, left_out = [], None
    for i, record in enumerate(read_records(sft_folder)):
        if i >= 8:
            left_out = record["id"]  # the prompt "perturb" could not use: a reject naming an upstream record
            break
        user, answer = record["messages"][0], record["messages"][1]
        wrong = "no" if "yes" in json.dumps(answer).lower() else "yes, three of them"
        meta = {"strategy": "perturb", "prompt_id": record["id"], "swap": {"kind": "answer", "to": wrong},
                "ratings": {"chosen": 9, "rejected": 2}, "rationale": {"chosen": "matches the picture", "rejected": "wrong count"},
                "source": "vqa"}
        records.append({"prompt": [user], "chosen": [answer], "rejected": [{"role": "assistant", "content": [{"type": "text", "text": wrong}]}],
                        "images": record["images"], "meta": meta})
    with OutputFolder(out, overwrite=True) as folder:
        write_records(iter(records), folder.path, kind="preference", multimodal=True)
        folder.rejects.write(left_out, "perturb", "identical", "nothing to swap in the answer")
        folder.write_json("report.json", {"command": "prefs", "source": str(sft_folder), "strategy": "perturb", "prompts": 9, "prompts_with_pairs": 8,
                                          "pairs": 8, "requests": 0, "dropped": {"identical": 1}, "failed": {}, "models": []})
    return out


def build_sets(root: Path) -> dict[str, Path]:
    from synth.llm.testing import LLMTestServer

    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / name for name in ("shapes", "vqa", "captions", "mix", "evolved", "prefs")}
    cli("demo-data", paths["shapes"], "--count", 12, "--size", 64, "--seed", 3)
    cli("adapt", paths["shapes"], "-t", "vqa_short", "-o", paths["vqa"])
    cli("adapt", paths["shapes"], "-t", "caption_brief", "-o", paths["captions"])
    (root / "mix.yaml").write_text(MIX_RECIPE)
    cli("mix", root / "mix.yaml", "--out", paths["mix"])
    with LLMTestServer() as server:
        server.script(scripted_model)
        cli("evolve", paths["shapes"], "--method", "mmevol", "--out", paths["evolved"], "--base-url", server.base_url,
            "--model", "test-model", "--rounds", 2, "--limit", 5, "--no-cache", "--judge-batch-size", 1)
    write_prefs(paths["vqa"], paths["prefs"])
    return paths


@pytest.fixture(scope="session")
def sets(tmp_path_factory) -> dict[str, Path]:
    return build_sets(tmp_path_factory.mktemp("publish") / "data")
