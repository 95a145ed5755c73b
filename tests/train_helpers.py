"""Shared pieces of the training tests: tiny models built once per session, demo-like data, recipes.

Models are random and tiny (synth.train.tiny); data comes from the real commands (`synth demo-data`,
`synth adapt`), so the tests train on the rows users train on, only fewer and smaller.
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.cli_helpers import run_cli

_ROOT = Path(tempfile.mkdtemp(prefix="synth-train-tests-"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine, torch's spinning worker threads
    made these tests 5x slower. Imported into a test module, it applies to that module (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def tiny_text_model(template: str | None = None, arch: str = "llama") -> Path:
    from synth.train.tiny import build_text_model

    return build_text_model(_ROOT / f"text-{arch}-{template or 'none'}", arch=arch, chat_template=template)


@functools.cache
def tiny_llava() -> Path:
    from synth.train.tiny import build_llava

    return build_llava(_ROOT / "llava")


def demo_images(count: int = 8, seed: int = 0) -> Path:
    return _demo_images(count, seed)  # one cache key however the arguments are spelled


@functools.cache
def _demo_images(count: int, seed: int) -> Path:
    out = _ROOT / f"shapes-{count}-{seed}"
    result = run_cli("demo-data", out, "--count", count, "--seed", seed, "--size", 64)
    assert result.exit_code == 0, result.output
    return out


def adapted(template: str, count: int = 8, seed: int = 0) -> Path:
    return _adapted(template, count, seed)  # one cache key however the arguments are spelled


@functools.cache
def _adapted(template: str, count: int, seed: int) -> Path:
    out = _ROOT / f"{template}-{count}-{seed}"
    result = run_cli("adapt", demo_images(count, seed), "-t", template, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def write_recipe(folder: Path, name: str = "recipe.yaml", **fields) -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def fast_fields(model: Path, dataset: Path, out: Path, **extra) -> dict:
    """Recipe fields for a few quick steps on CPU in fp32 (bit-exact comparisons need no autocast)."""
    fields = dict(
        model=str(model), dataset=str(dataset), output_dir=str(out), max_steps=3, batch_size=4, max_length=256,
        logging_steps=1, learning_rate=1e-2, precision="fp32", device="cpu", warmup_ratio=0.0,
    )
    fields.update(extra)
    return fields


def save_pairs(records: list[dict], out: Path) -> Path:
    """A preference dataset in synth's layout, written with the one writer's Arrow layout."""
    from synth.data import build_dataset, save

    save(build_dataset(iter(records), kind="preference"), out)
    return out


_WRONG = {"yes": "no", "no": "yes"}


def wrong_answer(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer to a demo question (the perturbation a preference set pairs with it)."""
    if answer in _WRONG:
        return _WRONG[answer]
    if answer.isdigit():
        return str((int(answer) + rng.randint(1, 3)) % 5)
    pool = ["red", "green", "blue", "yellow", "purple", "orange", "left", "right", "above", "below"]
    return rng.choice([p for p in pool if p != answer])


def image_pairs(rows: int, out: Path) -> Path:
    """Preference pairs on demo images: each `vqa_short` answer chosen, a perturbed one rejected."""
    from synth.data import load

    rng = random.Random(1)
    records = []
    for row in load(adapted("vqa_short")).select(range(rows)):
        answer = row["messages"][-1]["content"][0]["text"]
        records.append({
            "prompt": row["messages"][:-1],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": wrong_answer(answer, rng)}]}],
            "images": row["images"],
        })
    return save_pairs(records, out)


def scene_pairs(sft_dataset: Path, out: Path, limit: int | None = None) -> Path:
    """Preference pairs from scene QA rows: chosen = the reference answer, rejected = a wrong one."""
    from synth.data import load

    rng = random.Random(0)
    rows = load(sft_dataset)
    records = []
    for row in rows.select(range(min(limit or len(rows), len(rows)))):
        prompt, answer = row["messages"][:-1], row["messages"][-1]["content"]
        records.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": wrong_answer(answer, rng)}],
                "meta": json.dumps({"source": "test", "parent_id": row["id"]}),
            }
        )
    return save_pairs(records, out)


def params_of(path: Path, vision: bool = True) -> dict:
    """Parameters of a saved model by their in-memory names (LLaVA's checkpoint keys differ from them)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    return {n: p.detach().clone() for n, p in cls.from_pretrained(str(path)).named_parameters()}


def has_torchvision() -> bool:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a torchvision built for another torch fails on import
        return False
    return True


#: Image-text families whose processors need torchvision (their video processors) or num2words (SmolVLM).
NEEDS_TORCHVISION = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm", "llava_onevision", "internvl"}


@functools.cache
def tiny_vlm(family: str) -> Path:
    """A tiny random image-text model of `family` (synth.train.tiny.build_vlm), built once per session."""
    import importlib.util

    if family in NEEDS_TORCHVISION and not has_torchvision():
        pytest.skip(f"{family}: its processor needs torchvision (run with the torch 2.14 + torchvision venv)")
    if family == "smolvlm" and importlib.util.find_spec("num2words") is None:
        pytest.skip("smolvlm: its processor needs the num2words package")
    from synth.train.tiny import build_vlm

    return build_vlm(family, _ROOT / f"vlm-{family}")
