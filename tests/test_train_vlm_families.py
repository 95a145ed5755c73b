"""Every image-text family end to end on tiny random models built offline: align trains exactly the
connector, SFT puts LoRA on the language model only and trains the connector in full, DPO and merge run,
and evaluation scores image rows at batch size 2. Tensors are compared: frozen parts bit-identical after
training, trained parts changed."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from synth.train import recipe_from_dict, run_stage
from tests.train_helpers import (
    adapted,
    fast_fields,
    image_pairs,
    one_torch_thread,  # noqa: F401  (autouse: one torch thread)
    params_of,
    tiny_llava,
    tiny_vlm,
)

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm",
            "gemma3", "paligemma", "mllama", "internvl"]
#: The connector's module path per family (what synth must find without being told).
CONNECTOR = {
    "llava": "model.multi_modal_projector",
    "llava_next": "model.multi_modal_projector",
    "llava_onevision": "model.multi_modal_projector",
    "paligemma": "model.multi_modal_projector",
    "mllama": "model.multi_modal_projector",
    "internvl": "model.multi_modal_projector",
    "idefics3": "model.connector",
    "smolvlm": "model.connector",
    "gemma3": "model.multi_modal_projector",
    "qwen2_vl": "model.visual.merger",
    "qwen2_5_vl": "model.visual.merger",
    "qwen3_vl": "model.visual.merger",
}


def model_of(family: str):
    return tiny_llava() if family == "llava" else tiny_vlm(family)


class Params(TrainerCallback):
    def __init__(self):
        self.params: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}


def parts_of(path):
    from synth.train.models import inspect_model
    from synth.train.parts import model_parts

    return model_parts(inspect_model(str(path)))


@pytest.mark.parametrize("family", FAMILIES)
def test_parts_of_full_size_configs_on_meta(family):
    """The real (default, full-size) config of each family, built on the meta device: no torchvision, no
    memory. The connector is found by name; it wins over the vision module it may sit in (Qwen-VL)."""
    from transformers import AutoConfig

    from synth.train.parts import find_parts, meta_model

    parts = find_parts(meta_model(AutoConfig.for_model(family)))
    assert CONNECTOR[family] in parts.connector
    assert parts.part_of(CONNECTOR[family] + ".x.weight") == "connector"
    assert parts.vision and all(parts.part_of(v + ".x.weight") == "vision" for v in parts.vision)
    assert parts.vision_blocks and parts.part_of(parts.vision_blocks[-1]) == "vision"
    assert parts.part_of("lm_head.weight") == "language"
    assert {parts.part_of(p) for p in ("model.language_model.layers.0.mlp.down_proj.weight",
                                       "model.text_model.layers.0.mlp.down_proj.weight")} == {"language"}


@pytest.mark.parametrize("family", FAMILIES)
def test_align_trains_exactly_the_connector(family, tmp_path):
    base = model_of(family)
    parts = parts_of(base)
    original = params_of(base)
    out = tmp_path / "aligned"
    params = Params()
    recipe = recipe_from_dict(
        fast_fields(base, adapted("caption_brief"), out, max_steps=2, batch_size=2, learning_rate=5e-2), "align"
    )
    run_stage("align", recipe, callbacks=[params])
    assert {parts.part_of(n) for n in params.trainable} == {"connector"}
    changed = {n for n, t in params.params.items() if not torch.equal(t, original[n])}
    assert changed and {parts.part_of(n) for n in changed} == {"connector"}
    assert any(n.startswith(CONNECTOR[family] + ".") for n in changed)


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    runs = {}

    def run(family):
        if family not in runs:
            base = model_of(family)
            out = tmp_path_factory.mktemp(f"{family}-sft") / "adapter"
            params = Params()
            recipe = recipe_from_dict(
                fast_fields(base, adapted("vqa_short"), out, limit=4, max_steps=2, batch_size=2, learning_rate=5e-2),
                "sft",
            )
            runs[family] = (base, out, run_stage("sft", recipe, callbacks=[params]), params)
        return runs[family]

    return run


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_lora_on_language_model_connector_in_full(family, sft_runs):
    from synth.train.parts import base_name

    base, _, _, params = sft_runs(family)
    parts = parts_of(base)
    original = params_of(base)
    lora = {n for n in params.trainable if ".lora_" in n}
    full = params.trainable - lora
    assert lora and {parts.part_of(n) for n in lora} == {"language"}
    assert full and {parts.part_of(n) for n in full} == {"connector"}
    assert all("modules_to_save" in n for n in full)
    changed_connector = False
    for name, tensor in params.params.items():
        key = base_name(name)
        if ".lora_" in name:
            continue
        if "modules_to_save" in name:
            changed_connector |= not torch.equal(tensor, original[key])
            continue
        assert torch.equal(tensor, original[key]), name  # vision tower, language model, the connector's copy
    assert changed_connector


@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_merge_eval(family, sft_runs, tmp_path):
    from synth.train.evaluate import ModelSpec, evaluate

    base, adapter, _, _ = sft_runs(family)
    pairs = image_pairs(4, tmp_path / "pairs")
    dpo_out = tmp_path / "dpo"
    params = Params()
    result = run_stage("dpo", recipe_from_dict(fast_fields(base, pairs, dpo_out, max_steps=1, batch_size=2), "dpo"),
                       callbacks=[params])
    assert result.summary["steps"] == 1 and (dpo_out / "adapter_model.safetensors").is_file()
    parts = parts_of(base)
    lora = {n for n in params.trainable if ".lora_" in n}
    assert lora and {parts.part_of(n) for n in lora} == {"language"}
    assert {parts.part_of(n) for n in params.trainable - lora} == {"connector"}

    merged = tmp_path / "merged"
    run_stage("merge", recipe_from_dict({"adapter": str(adapter), "output_dir": str(merged)}, "merge"))
    merged_params = params_of(merged)
    base_params = params_of(base)
    connector = [n for n in merged_params if n.startswith(CONNECTOR[family] + ".")]
    assert any(not torch.equal(merged_params[n], base_params[n]) for n in connector)
    vision = [n for n in merged_params if parts.part_of(n) == "vision"]
    assert vision and all(torch.equal(merged_params[n], base_params[n]) for n in vision)

    report = evaluate([ModelSpec("base", str(base)), ModelSpec("sft", str(base), str(adapter))],
                      str(adapted("vqa_short")), limit=4, max_new_tokens=2, batch_size=2, device="cpu",
                      precision="fp32")
    assert set(report.metrics) == {"base", "sft"}
    report = evaluate([ModelSpec("base", str(merged))], str(pairs), limit=4, batch_size=2, device="cpu",
                      precision="fp32")
    assert "base" in report.metrics


def test_sft_recipe_freezes_connector_and_trains_last_vision_block(tmp_path):
    """train_connector: false keeps the connector as it was; train_vision_blocks: 1 trains the vision
    encoder's last block in full (saved with the adapter), every other vision block stays bit-identical."""
    from synth.train.parts import base_name

    base = tiny_vlm("idefics3")
    parts = parts_of(base)
    original = params_of(base)
    params = Params()
    fields = fast_fields(base, adapted("vqa_short"), tmp_path / "out", limit=4, max_steps=2, batch_size=2,
                         learning_rate=5e-2, train_connector=False, train_vision_blocks=1)
    run_stage("sft", recipe_from_dict(fields, "sft"), callbacks=[params])
    last_block = parts.vision_blocks[-1]
    full = {n for n in params.trainable if ".lora_" not in n}
    assert full and all(base_name(n).startswith(last_block + ".") for n in full)
    for name, tensor in params.params.items():
        if ".lora_" in name or "modules_to_save" in name:
            continue
        assert torch.equal(tensor, original[base_name(name)]), name  # the connector included
    assert any(not torch.equal(params.params[n], original[base_name(n)]) for n in full)


def test_align_trains_the_connector_a_recipe_names(tmp_path):
    """`connector:` names the module for a family synth does not know: only it trains."""
    base = tiny_llava()
    original = params_of(base)
    params = Params()
    fields = fast_fields(base, adapted("caption_brief"), tmp_path / "out", max_steps=2, batch_size=2,
                         connector=["model.multi_modal_projector.linear_2"])
    run_stage("align", recipe_from_dict(fields, "align"), callbacks=[params])
    assert params.trainable == {"model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias"}
    changed = {n for n, t in params.params.items() if not torch.equal(t, original[n])}
    assert changed == params.trainable


def test_unknown_connector_is_one_line_before_the_weights_load(tmp_path, monkeypatch):
    from synth.train import align
    from tests.cli_helpers import one_line_error, run_cli
    from tests.train_helpers import write_recipe

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(align, "load_weights", no_weights)
    recipe = write_recipe(tmp_path, **fast_fields(tiny_llava(), adapted("caption_brief"), tmp_path / "out",
                                                  connector=["model.projector"]))
    one_line_error(run_cli("train", "align", recipe), "connector: model.projector is not a module",
                   "model.multi_modal_projector")


def test_sft_prints_what_each_part_trains(tmp_path):
    from tests.cli_helpers import run_cli
    from tests.train_helpers import write_recipe

    recipe = write_recipe(tmp_path, **fast_fields(tiny_vlm("idefics3"), adapted("vqa_short"), tmp_path / "out",
                                                  limit=2, max_steps=1, batch_size=2))
    result = run_cli("train", "sft", recipe)
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    assert rows["vision"].rstrip(" │").endswith("frozen") and " 0 " in rows["vision"]
    assert rows["connector"].rstrip(" │").endswith("full") and rows["language"].rstrip(" │").endswith("LoRA")


def test_eval_failure_is_one_line(tmp_path):
    """A model whose config no longer matches its processor (Gemma 3 expecting 16 image tokens per image,
    the processor giving 4): the forward pass fails, and eval says so in one line naming the rows."""
    import json
    import shutil

    from tests.cli_helpers import run_cli

    model = tmp_path / "gemma3"
    shutil.copytree(tiny_vlm("gemma3"), model)
    config = json.loads((model / "config.json").read_text())
    config["mm_tokens_per_image"] = 16
    (model / "config.json").write_text(json.dumps(config))
    result = run_cli("eval", model, adapted("vqa_short"), "--limit", 2, "--batch-size", 2, "--device", "cpu",
                     "--precision", "fp32", "-o", tmp_path / "eval.json")
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"eval gemma3 ({model}): rows " in errors[0] and "image tokens do not match" in errors[0]
    assert not (tmp_path / "eval.json").exists()


def test_full_finetune_keeps_the_vision_encoder(tmp_path):
    """lora: null trains the language model and the connector in full; the vision encoder stays bit-identical."""
    base = tiny_vlm("gemma3")
    parts = parts_of(base)
    original = params_of(base)
    params = Params()
    fields = fast_fields(base, adapted("vqa_short"), tmp_path / "out", limit=4, max_steps=2, batch_size=2,
                         learning_rate=1e-2, lora=None)
    run_stage("sft", recipe_from_dict(fields, "sft"), callbacks=[params])
    assert {parts.part_of(n) for n in params.trainable} == {"connector", "language"}
    changed = {parts.part_of(n) for n, t in params.params.items() if not torch.equal(t, original[n])}
    assert changed == {"connector", "language"}


def test_processor_needing_torchvision_is_one_line(tmp_path):
    """Without torchvision, a Qwen2-VL processor (its video processor) cannot load: one line that says so."""
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessorPil

    from synth.train.tiny import build_tokenizer
    from tests.cli_helpers import one_line_error, run_cli
    from tests.train_helpers import has_torchvision, write_recipe

    if has_torchvision():
        pytest.skip("torchvision is installed here: the Qwen2-VL processor loads")
    model = tmp_path / "qwen2_vl"
    Qwen2VLConfig().save_pretrained(str(model))
    Qwen2VLImageProcessorPil().save_pretrained(str(model))
    build_tokenizer().save_pretrained(str(model))
    recipe = write_recipe(tmp_path, **fast_fields(model, adapted("vqa_short"), tmp_path / "out"))
    one_line_error(run_cli("train", "sft", recipe), "model", "(qwen2_vl): cannot load its processor",
                   "requires the Torchvision library", "install it")


def test_mllama_cross_attention_mask_rebuilt_as_the_processor_builds_it():
    """Prompt-completion rows joined by TRL: the rebuilt mask equals the processor's own mask for the joined
    text (every token from the image token on sees the image's tiles, none before it)."""
    from PIL import Image
    from transformers import AutoProcessor

    from synth.train.vlm_batches import rebuild_cross_attention_mask

    processor = AutoProcessor.from_pretrained(str(tiny_vlm("mllama")))
    prompts = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the shape?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}, {"type": "text", "text": "?"}]}],
    ]
    texts = [processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + "red circle"
             for p in prompts]
    images = [[Image.new("RGB", (16, 16), "red")], [Image.new("RGB", (16, 16), "blue")]]
    prompt_only = processor(text=[t[: -len("red circle")] for t in texts], images=images, return_tensors="pt",
                            padding=True)
    full = processor(text=texts, images=images, return_tensors="pt", padding=True)
    rebuilt = rebuild_cross_attention_mask(full["input_ids"], prompt_only["cross_attention_mask"],
                                           processor.image_token_id)
    assert rebuilt.shape == full["cross_attention_mask"].shape
    real = full["attention_mask"].bool()
    assert torch.equal(rebuilt[real], full["cross_attention_mask"][real])
