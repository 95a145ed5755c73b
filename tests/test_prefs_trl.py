"""The preference sets synth prefs writes train with TRL's DPOTrainer and go through the exporters.

One DPO step each on a tiny random text model and a tiny random LLaVA, both built from configs offline
(`synth.train.tiny`): they produce noise, the point is that TRL takes the rows as they are.
"""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from synth.prefs import PerturbStrategy, SceneIndex, build_preferences


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    """perturb pairs from the demo data: image-text (vqa_short) and text-only (scene_qa_text)."""
    from synth.adapt.engine import adapt
    from synth.demo_data import write_demo_data

    root = tmp_path_factory.mktemp("prefs-trl")
    shapes = write_demo_data(root / "shapes", count=3, show_progress=False)
    scenes = SceneIndex.from_source(shapes)
    out = {}
    for template in ("vqa_short", "scene_qa_text"):
        adapted = adapt(shapes, template, root / template).out
        build_preferences(adapted, root / f"prefs_{template}", PerturbStrategy(scenes=scenes), show_progress=False)
        out[template] = root / f"prefs_{template}"
    return out


def dpo_step(model, processing, dataset, out):
    """One DPO training step with TRL; the loss it logged."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=2, max_steps=1, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, bf16=False, max_length=512, dataloader_num_workers=0, seed=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processing)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 1 and logged
    return logged[0]


def test_text_pairs_train_one_dpo_step(prefs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth.train.tiny import build_text_model

    path = build_text_model(tmp_path / "tiny", chat_template="chatml")
    dataset = load_from_disk(str(prefs["scene_qa_text"]))
    assert {"prompt", "chosen", "rejected", "id", "meta"} <= set(dataset.column_names) and "images" not in dataset.column_names
    assert isinstance(dataset[0]["prompt"][0]["content"], str)  # TRL's conversational text layout
    dataset = dataset.select(range(4))
    log = dpo_step(AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)), dataset, tmp_path / "run")
    assert log["loss"] > 0


def test_image_pairs_train_one_dpo_step_on_a_tiny_llava(prefs, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from synth.train.tiny import build_llava

    path = build_llava(tmp_path / "llava")
    dataset = load_from_disk(str(prefs["vqa_short"])).select(range(4))
    row = dataset[0]
    assert len(row["images"]) == 1 and row["images"][0].size == (256, 256)  # decoded by datasets for TRL
    assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}
    log = dpo_step(LlavaForConditionalGeneration.from_pretrained(str(path)), AutoProcessor.from_pretrained(str(path)), dataset, tmp_path / "run")
    assert log["loss"] > 0


def test_exports_for_trl_llamafactory_and_openai(prefs, tmp_path):
    from synth.export import export_dataset

    images = load_from_disk(str(prefs["vqa_short"]))
    summary = export_dataset(prefs["vqa_short"], tmp_path / "trl", "trl", show_progress=False)
    assert summary.kind == "preference" and summary.rows == len(images)
    summary = export_dataset(prefs["vqa_short"], tmp_path / "lf", "llamafactory", show_progress=False)
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    (entry,) = info.values()
    assert entry["ranking"] is True and entry["columns"]["chosen"] == "chosen"
    rows = json.loads((tmp_path / "lf" / entry["file_name"]).read_text())
    assert len(rows) == len(images) and rows[0]["messages"][0]["content"].startswith("<image>")
    assert rows[0]["chosen"]["role"] == "assistant" and len(rows[0]["images"]) == 1

    text = load_from_disk(str(prefs["scene_qa_text"]))
    export_dataset(prefs["scene_qa_text"], tmp_path / "oa", "openai", show_progress=False)
    (jsonl,) = (tmp_path / "oa").glob("*.jsonl")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == len(text)
    first = lines[0]
    assert first["input"]["messages"][0]["role"] == "user"
    assert first["preferred_output"] == [{"role": "assistant", "content": text[0]["chosen"][0]["content"]}]
    assert first["non_preferred_output"] == [{"role": "assistant", "content": text[0]["rejected"][0]["content"]}]


def test_show_renders_pairs_side_by_side(prefs):
    from rich.console import Console

    from synth.show import render_row

    row = load_from_disk(str(prefs["vqa_short"]))[0]
    console = Console(width=100, record=True, color_system=None)
    console.print(render_row(row, "preference", title="#0"))  # synth show's path: images labelled, then the pair
    out = console.export_text()
    chosen, rejected = row["chosen"][0]["content"][0]["text"], row["rejected"][0]["content"][0]["text"]
    line = next(line for line in out.splitlines() if chosen in line and rejected in line)
    assert line.index(chosen) < line.index(rejected)  # one line, two columns
    assert "chosen" in out and "rejected" in out and "[image 256x256]" in out and "perturb" in out
