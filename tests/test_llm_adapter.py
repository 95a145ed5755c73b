"""The local backend serving a base model + a LoRA adapter (tiny random models, planted adapters, offline).

A planted adapter is a LoRA on the input embeddings whose delta adds one huge vector (the LM-head row of a
chosen token) to every position: the residual stream then points at that token, so greedy decoding
repeats it. That makes "the adapter is applied" and "a different adapter is applied" visible in the text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from synth.errors import SynthError
from synth.llm.base import ChatRequest
from synth.llm.local import LocalBackend, adapter_base_model, model_identity
from synth.records import Message

PROMPT = "How many shapes are there in the image?"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from synth.train.tiny import build_text_model

    return build_text_model(tmp_path_factory.mktemp("base") / "tiny")


def token_id(base: Path, word: str) -> int:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(base))(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not one token of the tiny tokenizer"
    return ids[0]


def plant_adapter(base: Path, out: Path, word: str, *, summary_model: str | None = None,
                  config_base: str | None = None, strength: float = 300.0) -> Path:
    """Write a LoRA adapter into `out` that makes the model say `word` (one token) over and over."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    target = token_id(base, word)
    peft_model = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=["embed_tokens"],
                                                  init_lora_weights=False))
    layer = peft_model.base_model.model.model.embed_tokens
    direction = model.lm_head.weight[target].detach()
    with torch.no_grad():
        layer.lora_embedding_A["default"].fill_(1.0)
        layer.lora_embedding_B["default"].copy_((strength * direction / direction.norm()).unsqueeze(1))
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), save_embedding_layers=False)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    if config_base is not None:
        path = out / "adapter_config.json"
        config = json.loads(path.read_text())
        config["base_model_name_or_path"] = config_base
        path.write_text(json.dumps(config))
    if summary_model is not None:
        (out / "train_summary.json").write_text(json.dumps({"stage": "sft", "model": summary_model}))
    return out


def ask(backend, prompt: str = PROMPT, **params) -> str:
    params = {"temperature": 0, "max_tokens": 6, **params}
    [completion] = backend.complete([ChatRequest(messages=[Message(role="user", content=prompt)], **params)])
    assert completion.ok, completion.error
    return completion.text


def test_adapter_folder_as_model_changes_the_output(base, tmp_path):
    adapter = plant_adapter(base, tmp_path / "round1", " blue")
    plain = LocalBackend(model=str(base), max_tokens=6)
    served = LocalBackend(model=str(adapter), max_tokens=6)
    assert served.base_model == str(base) and served.adapter == str(adapter)

    before, after = ask(plain), ask(served)
    assert before != after
    assert after.count("blue") >= 3, after  # the planted token dominates every step
    assert "blue" not in before


def test_merged_and_unmerged_adapter_agree(base, tmp_path):
    adapter = plant_adapter(base, tmp_path / "a", " star")
    merged = LocalBackend(model=str(base), adapter=str(adapter), max_tokens=6)
    unmerged = LocalBackend(model=str(base), adapter=str(adapter), max_tokens=6, merge_adapter=False)
    from peft import PeftModel

    assert not isinstance(merged.load().model, PeftModel)  # folded into the weights: plain generate()
    assert isinstance(unmerged.load().model, PeftModel)
    assert ask(merged) == ask(unmerged)
    assert "star" in ask(merged)


def test_base_from_train_summary_then_adapter_config(base, tmp_path):
    # synth's train_summary.json names the base; PEFT's field points nowhere useful here
    adapter = plant_adapter(base, tmp_path / "s", " shapes", summary_model=str(base), config_base="/nowhere/base")
    assert adapter_base_model(adapter) == str(base)
    assert "shapes" in ask(LocalBackend(model=str(adapter), max_tokens=6))
    # no summary: PEFT's base_model_name_or_path
    (adapter / "train_summary.json").unlink()
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert LocalBackend(model=str(adapter)).base_model == str(base)
    # the embedded model by synth's name maps to the backend's embedded default (not loaded here)
    (adapter / "train_summary.json").write_text(json.dumps({"model": "embedded"}))
    from synth.llm.embedded import EMBEDDED_MODEL

    assert LocalBackend(model=str(adapter)).base_model == EMBEDDED_MODEL


def test_bad_adapter_options_are_clear_errors(base, tmp_path):
    with pytest.raises(SynthError, match="not a LoRA adapter folder"):
        LocalBackend(model=str(base), adapter=str(tmp_path))
    adapter = plant_adapter(base, tmp_path / "nobase", " blue")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(SynthError, match="cannot tell its base model"):
        LocalBackend(model=str(adapter))


def test_model_name_names_the_adapter_content(base, tmp_path):
    folder = tmp_path / "round"
    plant_adapter(base, folder, " blue")
    first = LocalBackend(model=str(folder))
    assert first.model_name.startswith(f"{base}+round@") and first.identity.endswith(first.model_name.split("+")[1])
    assert model_identity(str(folder)) == first.identity
    # timings and the summary do not decide replies: same weights, same identity
    (folder / "train_summary.json").write_text(json.dumps({"model": str(base), "train_seconds": 1.0}))
    assert model_identity(str(folder)) == first.identity
    plant_adapter(base, folder, " star")  # retrained in place
    assert model_identity(str(folder)) != first.identity


def test_cache_never_replays_another_adapters_answers(base, tmp_path):
    from synth.llm.factory import make_backend

    folder = tmp_path / "roundk"
    cache = tmp_path / "cache"
    plant_adapter(base, folder, " blue")
    round1 = make_backend("local", str(folder), cache_dir=cache, max_tokens=6)
    first = ask(round1)
    assert "blue" in first and round1.usage.cached == 0
    again = make_backend("local", str(folder), cache_dir=cache, max_tokens=6)
    assert ask(again) == first and again.usage.cached == 1  # same adapter: replayed

    plant_adapter(base, folder, " star")  # model k+1 written over model k, same folder name
    round2 = make_backend("local", str(folder), cache_dir=cache, max_tokens=6)
    second = ask(round2)
    assert round2.usage.cached == 0 and "star" in second and second != first


def test_model_folder_rewritten_in_place_is_not_replayed(base, tmp_path):
    import shutil

    from synth.llm.factory import make_backend

    model = tmp_path / "merged"
    shutil.copytree(base, model)
    cache = tmp_path / "cache"
    ask(make_backend("local", str(model), cache_dir=cache, max_tokens=4))
    again = make_backend("local", str(model), cache_dir=cache, max_tokens=4)
    ask(again)
    assert again.usage.cached == 1
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # rewritten in place (a new round saved over the old)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    fresh = make_backend("local", str(model), cache_dir=cache, max_tokens=4)
    ask(fresh)
    assert fresh.usage.cached == 0


def test_recipe_backend_spec_takes_adapter_options(base, tmp_path):
    from synth.run.spec import backend_spec_types

    _, local_spec = backend_spec_types()
    spec = local_spec.model_validate({"backend": "local", "model": str(base), "adapter": str(tmp_path / "a"),
                                      "merge_adapter": False})
    assert spec.adapter == str(tmp_path / "a") and spec.merge_adapter is False
