"""Bad training recipes fail with one clear line, before any model weights load.

The model folders here hold only a config.json (no weights, no tokenizer), or do not exist at all: if a
check ran after loading, the test would see a load error instead of the expected message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.errors import SynthError
from synth.recipe_file import apply_overrides
from synth.train.recipe import load_recipe
from tests.cli_helpers import one_line_error, run_cli
from tests.train_helpers import (
    adapted,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    save_pairs,
    tiny_text_model,
    write_recipe,
)


@pytest.fixture(scope="module")
def config_only(tmp_path_factory) -> dict[str, Path]:
    """Folders holding just a model config: a text-only Llama and a LLaVA."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    root = tmp_path_factory.mktemp("configs")
    text = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    llava = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, image_size=32, patch_size=8),
                        text_config=text)
    out = {}
    for name, config in (("text", text), ("llava", llava)):
        (root / name).mkdir()
        config.save_pretrained(str(root / name))
        out[name] = root / name
    return out


def test_unknown_key_names_file_and_line(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\nlora:\n  r: 8\n  alpah: 16\n")
    result = run_cli("train", "sft", recipe)
    one_line_error(result, f"{recipe}:6", "lora.alpah", "unknown key")


def test_top_level_unknown_key_and_wrong_type(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\nlearning_rat: 1e-4\n")
    one_line_error(run_cli("train", "sft", recipe), f"{recipe}:4", "learning_rat", "unknown key")
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\nbatch_size: many\n")
    one_line_error(run_cli("train", "sft", recipe), f"{recipe}:4", "batch_size")


def test_override_is_validated_and_named(tmp_path):
    recipe = write_recipe(tmp_path, model="embedded", dataset="data", output_dir="out")
    one_line_error(run_cli("train", "sft", recipe, "-s", "lora.rank=4"), "-s lora.rank", "unknown key")
    one_line_error(run_cli("train", "sft", recipe, "-s", "oops"), "expected path.to.key=value")


def test_duplicate_key_and_wrong_types_name_each_line(tmp_path):
    """The one recipe loader (as `synth run` and `synth mix`): each error at its own line, or its override."""
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\nlora:\n  r: 8\n  r: 16\n")
    one_line_error(run_cli("train", "sft", recipe), f"error: {recipe}:6: invalid training recipe: lora.r: duplicate key (first at line 5)")
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\nbatch_size: many\nlora:\n  r: eight\n")
    line = one_line_error(run_cli("train", "sft", recipe), f"{recipe}:4: batch_size: Input should be a valid integer",
                          f"{recipe}:6: lora.r: Input should be a valid integer")
    assert line.startswith(f"error: {recipe}:4: ")
    recipe.write_text("model: embedded\ndataset: data\noutput_dir: out\n")
    one_line_error(run_cli("train", "sft", recipe, "-s", "lora.r=abc"),
                   "error: -s lora.r=abc: lora.r: Input should be a valid integer")
    one_line_error(run_cli("train", "sft", recipe, "-s", "lora.alpah=4"), "lora.alpah: unknown key (did you mean 'alpha'?)")


def test_overrides_parse_yaml_values_and_nest():
    texts = ["learning_rate=1e-4", "lora.r=8", "report_to=[wandb]", "resume=true", "chat_template=default"]
    data, _ = apply_overrides({"lora": {"alpha": 4}}, texts)
    assert data == {
        "learning_rate": 1e-4, "lora": {"alpha": 4, "r": 8}, "report_to": ["wandb"], "resume": True,
        "chat_template": "default",
    }


def test_paths_resolve_beside_the_recipe(tmp_path):
    (tmp_path / "data").mkdir()
    recipe = write_recipe(tmp_path, model="embedded", dataset="data", output_dir="runs/x")
    loaded = load_recipe(recipe, "sft")
    assert loaded.dataset == str(tmp_path / "data")
    assert loaded.model == "embedded" and loaded.output_dir == "runs/x"


def test_missing_columns_fail_before_model(tmp_path):
    pairs = save_pairs(
        [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
          "rejected": [{"role": "assistant", "content": "b"}]}],
        tmp_path / "pairs",
    )
    recipe = write_recipe(tmp_path, model=str(tmp_path / "no-such-model"), dataset=str(pairs), output_dir=str(tmp_path / "o"))
    line = one_line_error(run_cli("train", "sft", recipe), "needs column 'messages'", "synth train dpo")
    assert "no-such-model" not in line
    sft_data = adapted("scene_qa_text")
    recipe = write_recipe(tmp_path, model=str(tmp_path / "no-such-model"), dataset=str(sft_data), output_dir=str(tmp_path / "o"))
    one_line_error(run_cli("train", "dpo", recipe), "'prompt', 'chosen', 'rejected'", "synth train sft")


def test_image_placeholder_mismatch_names_the_row(tmp_path, config_only):
    from synth.data import load, save

    captions = load(adapted("caption_brief"))
    bad_id = captions[1]["id"]

    def drop_image(row, index):
        if index == 1:  # the second row keeps its placeholder but loses its image
            row["images"] = []
        return row

    broken = captions.map(drop_image, with_indices=True)
    save(broken, tmp_path / "broken")
    recipe = write_recipe(tmp_path, model=str(config_only["llava"]), dataset=str(tmp_path / "broken"),
                          output_dir=str(tmp_path / "o"))
    # rows count from 1, as everywhere in synth
    one_line_error(run_cli("train", "sft", recipe), "row 2", bad_id, "1 image placeholder", "but 0 image")


def test_vision_data_with_text_model(tmp_path, config_only):
    recipe = write_recipe(tmp_path, model=str(config_only["text"]), dataset=str(adapted("caption_brief")),
                          output_dir=str(tmp_path / "o"))
    one_line_error(run_cli("train", "sft", recipe), "has images", "text-only", "scene_qa_text")
    one_line_error(run_cli("train", "align", recipe), "text-only", "connector")


def test_align_needs_images(tmp_path, config_only):
    recipe = write_recipe(tmp_path, model=str(config_only["llava"]), dataset=str(adapted("scene_qa_text")),
                          output_dir=str(tmp_path / "o"))
    one_line_error(run_cli("train", "align", recipe), "align", "no image")


def test_existing_output_and_missing_checkpoint(tmp_path, config_only):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    recipe = write_recipe(tmp_path, model=str(config_only["text"]), dataset=str(adapted("scene_qa_text")),
                          output_dir=str(out))
    one_line_error(run_cli("train", "sft", recipe), "already exists", "overwrite: true", "resume: true")
    one_line_error(run_cli("train", "sft", recipe, "-s", "resume=true"), "no checkpoint", "save_steps")


def test_unknown_trl_field(tmp_path):
    recipe = write_recipe(tmp_path, model=str(tiny_text_model()), dataset=str(adapted("scene_qa_text")),
                          output_dir=str(tmp_path / "o"), trl={"packing_stratgy": "bfd"})
    with pytest.raises(SynthError, match="trl.packing_stratgy"):
        from trl import SFTConfig

        from synth.train.runner import prepare, trainer_fields

        trainer_fields(prepare(load_recipe(recipe, "sft"), "sft"), SFTConfig)


def test_merge_recipe_needs_an_adapter_folder(tmp_path):
    recipe = write_recipe(tmp_path, adapter=str(tmp_path), output_dir=str(tmp_path / "merged"))
    one_line_error(run_cli("train", "merge", recipe), "not a LoRA adapter folder")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    one_line_error(run_cli("train", "merge", recipe), "cannot tell its base model")


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "recipes" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    stage = next((s for s in ("align", "dpo", "merge") if s in path.stem), "sft")
    recipe = load_recipe(path, stage)
    assert recipe.output_dir


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_deletes_a_folder_synth_did_not_write(tmp_path, config_only, monkeypatch):
    """overwrite: true replaces only a training output of synth; an unrelated folder, the dataset itself
    and the current folder (recipe inside) stay exactly as they were."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(adapted("scene_qa_text"), data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    model = str(config_only["text"])
    before = {name: _tree(tmp_path / name) for name in ("data", "mine")}

    recipe = write_recipe(tmp_path, model=model, dataset=str(data), output_dir=str(mine), overwrite=True)
    one_line_error(run_cli("train", "sft", recipe), str(mine), "not written by synth", "output_dir")
    recipe = write_recipe(tmp_path, model=model, dataset=str(data), output_dir=str(data), overwrite=True)
    one_line_error(run_cli("train", "sft", recipe), "is the input", "overwriting would delete it")
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, model=model, dataset="data", output_dir=".", overwrite=True)
    one_line_error(run_cli("train", "sft", recipe), "holds the input", "overwriting would delete it")
    assert {name: _tree(tmp_path / name) for name in ("data", "mine")} == before
    assert recipe.is_file()

    # A folder holding synth's marker (or an older synth's train_summary.json) may be replaced, unless it
    # holds an input: here the dataset sits inside an old training output.
    old_run = tmp_path / "old_run"
    old_run.mkdir()
    (old_run / "train_summary.json").write_text("{}")
    shutil.copytree(data, old_run / "data")
    recipe = write_recipe(tmp_path, model=model, dataset=str(old_run / "data"), output_dir=str(old_run),
                          overwrite=True)
    one_line_error(run_cli("train", "sft", recipe), "holds the input", str(old_run / "data"))
    assert (old_run / "data").is_dir()


def test_merge_overwrite_refuses_a_folder_synth_did_not_write(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    recipe = write_recipe(tmp_path, adapter=str(adapter), model=str(tmp_path / "no-such-model"),
                          output_dir=str(mine), overwrite=True)
    one_line_error(run_cli("train", "merge", recipe), "not written by synth")
    assert (mine / "notes.txt").read_text() == "keep me"
