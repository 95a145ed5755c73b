"""The closed loop with an image-text model: round k's tiny LLaVA (base, then base + round k-1's adapter,
served by the local backend) answers image questions, and round k+1 trains on those answers."""

from __future__ import annotations

from pathlib import Path

from synth.run import RunOptions, run_recipe
from tests.run_helpers import rows
from tests.train_helpers import one_torch_thread, tiny_llava  # noqa: F401 - a fixture

RECIPE = """\
name: vlm
backends:
  student: {{backend: local, model: loop, device: cpu, max_tokens: 6}}
stages:
  - {{type: demo, name: shapes, count: 3, size: 64}}
  - {{type: demo, name: other, count: 2, size: 64, offset: 3}}
  - {{type: adapt, name: labelled, input: shapes, template: vqa_short}}
  - {{type: adapt, name: questions, input: other, template: vqa_short}}
  - {{type: generate, name: answers, input: questions, backend: student, regenerate: true, limit: 4,
      temperature: 0, max_tokens: 6, keep_truncated: true}}
loop:
  rounds: 2
  model: {model}
  sft: {{data: [labelled, answers], max_steps: 2, batch_size: 4, max_length: 256, learning_rate: 0.05,
         precision: fp32, device: cpu, logging_steps: 1, warmup_ratio: 0.0}}
  eval: {{data: labelled, limit: 2, max_new_tokens: 2, device: cpu, precision: fp32, base: false}}
"""


def answers(folder: Path) -> list[str]:
    return [row["messages"][-1]["content"][0]["text"] for row in rows(folder)]


def test_two_rounds_answer_image_questions_and_train_on_them(tmp_path):
    base = tiny_llava()
    recipe = tmp_path / "vlm.yaml"
    recipe.write_text(RECIPE.format(model=base), encoding="utf-8")
    result = run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    run_dir = tmp_path / "runs" / "vlm"
    first, second = result.manifest["rounds"]
    assert [first["served"]["student"], second["served"]["student"]] == [str(base), str(run_dir / "round_0" / "sft")]

    for k, row in enumerate((first, second)):
        written = rows(run_dir / f"round_{k}" / "answers")
        assert len(written) == 4 and all(r["images"] for r in written)  # image rows, answered by model k
        assert row["sft"]["data"] == {"labelled": len(rows(run_dir / "labelled")), "answers": 4}
        trained = rows(run_dir / f"round_{k}" / "sft_data")
        assert [r["messages"] for r in trained[-4:]] == [r["messages"] for r in written]  # round k+1 trains on them
    assert second["sft"]["from"] == str(run_dir / "round_0" / "sft")

    # round 1's answers are model 1's (base + round 0's adapter), asked directly
    direct = tmp_path / "direct.yaml"
    direct.write_text(
        "name: direct\nbackends:\n"
        f"  base: {{backend: local, model: {base}, device: cpu, max_tokens: 6}}\n"
        f"  model1: {{backend: local, model: {run_dir / 'round_0' / 'sft'}, device: cpu, max_tokens: 6}}\n"
        "stages:\n"
        "  - {type: demo, name: other, count: 2, size: 64, offset: 3}\n"
        "  - {type: adapt, name: questions, input: other, template: vqa_short}\n"
        + "".join(f"  - {{type: generate, name: {name}, input: questions, backend: {name}, regenerate: true, limit: 4, "
                  "temperature: 0, max_tokens: 6, keep_truncated: true}\n" for name in ("base", "model1")),
        encoding="utf-8")
    run_recipe(direct, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    plain = tmp_path / "runs" / "direct"
    assert answers(run_dir / "round_0" / "answers") == answers(plain / "base")
    assert answers(run_dir / "round_1" / "answers") == answers(plain / "model1")
    assert answers(plain / "model1") != answers(plain / "base")  # the trained adapter changed what is said
