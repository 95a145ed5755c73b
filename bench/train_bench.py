"""Training throughput: synth's SFT and DPO against plain TRL defaults, same model and data, one run;
and image-text SFT (stage `vlm`) on a Qwen2-VL-shaped model.

Each configuration trains one epoch over the same rows in its own process (so peak memory is its own);
tokens/s counts the rows' real tokens (no padding) over trainer construction + training, which includes
TRL's tokenizing and, for DPO, the reference pass.

- TRL default: SFTTrainer / DPOTrainer with their default configs (gradient checkpointing on, padded
  batches, bf16 when available, DPO reference computed every step), the same LoRA and batch size.
- synth: `synth train sft|dpo` as a recipe runs them: packed padding-free text rows (BFD), no gradient
  checkpointing, loss on assistant tokens, on CPU TRL's fused LM head on labelled positions only, DPO
  reference log-probs precomputed once; on CUDA flash-attention varlen kernels and Liger kernels when
  installed.

    python bench/train_bench.py                     # CPU: a ~100M Llama built from a config (a few minutes)
    python bench/train_bench.py --model embedded    # CPU: the embedded Gemma 3 270M
    python bench/train_bench.py --device cuda       # GPU: a ~0.5B Qwen2-shaped model, 3,000 rows of ~275 tokens

Image-text SFT (`--stages vlm`): rows from `synth demo-data` images adapted with `vqa_conversation`
(one image, a few question/answer turns), on a random Qwen2-VL-shaped model built from a config.

- TRL default: `SFTTrainer(model, args=SFTConfig(max_length=None), peft_config=...)` as TRL's docs show
  for VLMs, the model loaded as `SFTTrainer(model=PATH)` loads it (float32; not timed), LoRA on
  "all-linear" as TRL's VLM example scripts set it (`--use_peft --lora_target_modules=all-linear`: the
  vision tower too) with r=16/alpha=32 (TRL's ModelConfig defaults).
- synth: `synth train sft`'s path: LoRA (same r/alpha) on the language model only, the connector (the
  merger) trained in full, the vision tower frozen, no gradient checkpointing.

    python bench/train_bench.py --stages vlm                  # CPU: ~36M (hidden 384, 4 layers, vocab 32k)
    python bench/train_bench.py --stages vlm --device cuda    # GPU: Qwen2-VL-2B shapes, 8 of 28 LM layers, bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("SYNTH_BENCH_CACHE", Path(tempfile.gettempdir()) / "synth-train-bench"))


# ---------------------------------------------------------------- data


def _words() -> list[str]:
    from synth.demo_data import BACKGROUNDS, COLORS, SHAPES, SIZES, WORDS

    return [*SHAPES, *COLORS, *SIZES, *BACKGROUNDS, *(w.lower() for w in WORDS), "the", "a", "is", "on", "left",
            "right", "above", "below", "image", "shows", "shape", "there", "how", "many", "what", "color", "1", "2", "3"]


def make_data(tokenizer, rows: int, mean_tokens: int, out: Path, seed: int = 0) -> tuple[Path, Path, dict]:
    """SFT rows (user + assistant) of log-normal token lengths with the given mean, and preference pairs."""
    from synth.data import build_dataset, save

    rng = random.Random(seed)
    words = _words()
    sigma = 0.5
    mu = math.log(mean_tokens) - sigma**2 / 2
    sft, prefs, lengths = [], [], []

    def text(n_tokens: int) -> str:
        out_words: list[str] = []
        while len(tokenizer(" ".join(out_words), add_special_tokens=False)["input_ids"]) < n_tokens:
            out_words.extend(rng.choice(words) for _ in range(max(1, (n_tokens - len(out_words)) // 2)))
        return " ".join(out_words)

    for _ in range(rows):
        total = max(16, int(rng.lognormvariate(mu, sigma)))
        answer_tokens = max(4, int(total * 0.3))
        prompt = text(total - answer_tokens)
        answer, wrong = text(answer_tokens), text(answer_tokens)
        user = {"role": "user", "content": prompt}
        sft.append({"messages": [user, {"role": "assistant", "content": answer}]})
        prefs.append({"prompt": [user], "chosen": [{"role": "assistant", "content": answer}],
                      "rejected": [{"role": "assistant", "content": wrong}]})
        lengths.append(total)
    save(build_dataset(iter(sft), kind="sft"), out / "sft")
    save(build_dataset(iter(prefs), kind="preference"), out / "prefs")
    return out / "sft", out / "prefs", {"rows": rows, "mean_tokens_target": mean_tokens, "mean_tokens": sum(lengths) / rows}


def count_tokens(model_dir: str, sft: Path, prefs: Path) -> tuple[int, int]:
    """Real tokens per epoch under the model's chat template: SFT rows, and DPO (prompt+chosen, prompt+rejected)."""
    from transformers import AutoTokenizer

    from synth.data import load

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.chat_template:
        from synth.train.models import default_template_text

        tok.chat_template = default_template_text()

    def n(messages):
        return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])

    sft_tokens = sum(n(r["messages"]) for r in load(str(sft)))
    dpo_tokens = sum(n(r["prompt"] + r["chosen"]) + n(r["prompt"] + r["rejected"]) for r in load(str(prefs)))
    return sft_tokens, dpo_tokens


def make_vlm_data(rows: int, image_size: int, out: Path) -> Path:
    """Image-text SFT rows drawn offline: `synth demo-data` images adapted with `vqa_conversation`."""
    from synth.data import load, save

    def synth_cli(*args):
        subprocess.run([sys.executable, "-m", "synth", *map(str, args)], check=True, capture_output=True)

    synth_cli("demo-data", out / "shapes", "--count", rows, "--size", image_size, "--seed", 0)
    synth_cli("adapt", out / "shapes", "-t", "vqa_conversation", "-o", out / "adapted")
    data = load(str(out / "adapted"))
    save(data.select(range(min(rows, len(data)))), out / "sft")
    return out / "sft"


def count_vlm_tokens(model_dir: str, sft: Path) -> int:
    """Real tokens per epoch as the model sees them: chat template + each image's tokens."""
    from transformers import AutoProcessor

    from synth.data import load
    from synth.train.data import row_lengths

    return sum(row_lengths(load(str(sft)), AutoProcessor.from_pretrained(model_dir), "sft"))


# ---------------------------------------------------------------- workers


def _peak_memory(device: str) -> float:
    """GiB: the process's peak RSS on CPU, peak allocated CUDA memory on GPU."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker(job: dict) -> dict:
    import torch

    from synth.train.runner import quiet_training

    torch.manual_seed(0)
    device = job["device"]
    with quiet_training():
        if job["who"] == "trl":
            return _trl_vlm_worker(job, device) if job["stage"] == "vlm" else _trl_worker(job, device)
        return _synth_worker(job, device)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _trl_worker(job: dict, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from synth.data import load
    from synth.train.models import default_template_text

    tok = AutoTokenizer.from_pretrained(job["model"])
    if not tok.chat_template:
        tok.chat_template = default_template_text()
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32).to(device)
    common = dict(output_dir=job["out"], per_device_train_batch_size=job["batch_size"], num_train_epochs=1,
                  report_to=[], save_strategy="no", use_cpu=device == "cpu", disable_tqdm=True, logging_steps=1000)
    base_mem = _peak_memory(device)
    started = time.monotonic()
    if job["stage"] == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=load(job["sft"]).select_columns(["messages"]),
                             processing_class=tok, peft_config=_lora())
    else:
        data = load(job["prefs"]).select_columns(["prompt", "chosen", "rejected"])
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=data, processing_class=tok,
                             peft_config=_lora())
    trainer.train()
    return {"seconds": time.monotonic() - started, "peak_gib": _peak_memory(device), "after_load_gib": base_mem,
            "steps": trainer.state.global_step}


def _trl_vlm_worker(job: dict, device: str) -> dict:
    """TRL's documented VLM recipe, SFTConfig(max_length=None) (no image token cut). The model loads as
    SFTTrainer(model=PATH) loads it (TRL's create_model_from_path: float32), outside the timed part."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.utils import create_model_from_path

    from synth.data import load

    args = SFTConfig(output_dir=job["out"], per_device_train_batch_size=job["batch_size"], num_train_epochs=1,
                     max_length=None, report_to=[], save_strategy="no", use_cpu=device == "cpu", disable_tqdm=True,
                     logging_steps=1000)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = create_model_from_path(job["model"])
    base_mem = _peak_memory(device)
    started = time.monotonic()
    data = load(job["sft"]).select_columns(["messages", "images"])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, peft_config=lora)
    trainer.train()
    return {"seconds": time.monotonic() - started, "peak_gib": _peak_memory(device), "after_load_gib": base_mem,
            "steps": trainer.state.global_step}


def _synth_worker(job: dict, device: str) -> dict:
    from synth.train import recipe_from_dict
    from synth.train.models import attn_implementation, load_weights
    from synth.train.runner import compact_lm_head, prepare, weights_dtype

    stage = "dpo" if job["stage"] == "dpo" else "sft"  # vlm: synth's SFT on image rows
    fields = dict(
        model=job["model"], dataset=job["prefs"] if stage == "dpo" else job["sft"], output_dir=job["out"],
        overwrite=True, epochs=1, batch_size=job["synth_batch_size"], max_length=job["max_length"],
        lora={"r": 16, "alpha": 32, "dropout": 0.0}, logging_steps=1000, device=device, learning_rate=1e-4,
    )
    recipe = recipe_from_dict(fields, stage)
    plan = prepare(recipe, stage)
    dtype = weights_dtype(plan, True)
    model = load_weights(plan.info, device=device, dtype=dtype, attn=attn_implementation(device, dtype))
    base_mem = _peak_memory(device)
    started = time.monotonic()
    with compact_lm_head(device):
        if stage == "sft":
            from synth.train.sft import build_trainer
        else:
            from synth.train.dpo import build_trainer
        trainer, _ = build_trainer(plan, model)
        trainer.train()
    return {"seconds": time.monotonic() - started, "peak_gib": _peak_memory(device), "after_load_gib": base_mem,
            "steps": trainer.state.global_step}


def run_worker(job: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"worker {job['who']} {job['stage']} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _bench_model(name: str) -> str:
    """A benchmark model built once into the cache (bench-100m, bench-0.5b, bench-vlm-small, bench-vlm-2b),
    or a model folder / the embedded model."""
    if not name.startswith("bench-"):
        from synth.train.models import resolve_model_path

        return resolve_model_path(name)
    from synth.train.tiny import build_bench_model, build_bench_vlm

    model_dir = CACHE / name
    if not (model_dir / "config.json").is_file():
        if name.startswith("bench-vlm-"):
            build_bench_vlm(model_dir, size=name.removeprefix("bench-vlm-"))
        else:
            build_bench_model(model_dir, size=name.removeprefix("bench-"))
    return str(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", default=None, help="bench-100m (CPU default), bench-0.5b (GPU default), embedded, or a folder")
    parser.add_argument("--rows", type=int, default=None, help="default: 32 (CPU), 3000 (GPU)")
    parser.add_argument("--mean-tokens", type=int, default=None, help="default: 160 (CPU), 275 (GPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="TRL rows per step; default 8")
    parser.add_argument("--max-length", type=int, default=None, help="synth's packed row length; default 1024 (CPU), 4096 (GPU)")
    parser.add_argument("--stages", default="sft,dpo", help="any of sft, dpo, vlm (image-text SFT)")
    parser.add_argument("--vlm-model", default=None, help="stage vlm: bench-vlm-small (CPU default), bench-vlm-2b (GPU default), "
                        "or a Qwen2-VL-style folder")
    parser.add_argument("--vlm-rows", type=int, default=None, help="stage vlm: image rows; default 32 (CPU), 1000 (GPU)")
    parser.add_argument("--image-size", type=int, default=None, help="stage vlm: demo image side; default 224 (CPU), 448 (GPU)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per configuration, interleaved; the fastest counts (a shared machine's load varies)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    gpu = args.device == "cuda"
    stages = args.stages.split(",")
    batch_size = args.batch_size or 8
    max_length = args.max_length or (4096 if gpu else 1024)
    CACHE.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    import trl

    print(f"device {args.device} ({torch.cuda.get_device_name() if gpu else _cpu_name()}, {os.cpu_count()} cores); "
          f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    tokens: dict[str, int] = {}
    base_job: dict[str, dict] = {}
    if {"sft", "dpo"} & set(stages):
        name = args.model or ("bench-0.5b" if gpu else "bench-100m")
        rows = args.rows or (3000 if gpu else 32)
        mean_tokens = args.mean_tokens or (275 if gpu else 160)
        model = _bench_model(name)
        from transformers import AutoTokenizer

        data_dir = CACHE / f"data-{Path(model).name}-{rows}-{mean_tokens}"
        if not (data_dir / "prefs").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            make_data(AutoTokenizer.from_pretrained(model), rows, mean_tokens, data_dir)
        tokens["sft"], tokens["dpo"] = count_tokens(model, data_dir / "sft", data_dir / "prefs")
        text_job = {"model": model, "sft": str(data_dir / "sft"), "prefs": str(data_dir / "prefs"),
                    "synth_batch_size": max(1, batch_size * mean_tokens // max_length), "max_length": max_length}
        base_job["sft"] = text_job
        # DPO rows are not packed: the same rows per step as TRL
        base_job["dpo"] = {**text_job, "synth_batch_size": batch_size, "max_length": max(1024, 4 * mean_tokens)}
        print(f"text: model {name} ({model}); {rows} rows, {tokens['sft'] / rows:.0f} tokens/row mean")
    if "vlm" in stages:
        name = args.vlm_model or ("bench-vlm-2b" if gpu else "bench-vlm-small")
        rows = args.vlm_rows or (1000 if gpu else 32)
        image_size = args.image_size or (448 if gpu else 224)
        model = _bench_model(name)
        data_dir = CACHE / f"vlm-data-{rows}-{image_size}"
        if not (data_dir / "sft").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            make_vlm_data(rows, image_size, data_dir)
        tokens["vlm"] = count_vlm_tokens(model, data_dir / "sft")
        # image rows are not packed (TRL cannot pack them): the same rows per step as TRL
        base_job["vlm"] = {"model": model, "sft": str(data_dir / "sft"), "prefs": None, "synth_batch_size": batch_size,
                           "max_length": 32768}
        print(f"image-text: model {name} ({model}); {rows} rows of one {image_size}px image + vqa_conversation turns, "
              f"{tokens['vlm'] / rows:.0f} tokens/row mean (image tokens included)")
    results: dict = {}
    for stage in stages:
        for attempt in range(args.repeat):
            for who in ("trl", "synth"):
                job = {**base_job[stage], "who": who, "stage": stage, "device": args.device,
                       "out": str(CACHE / f"out-{who}-{stage}"), "batch_size": batch_size}
                load = os.getloadavg()[0]
                r = run_worker(job)
                r["tokens_per_s"] = tokens[stage] / r["seconds"]
                print(f"  {stage:>3} {who:>5} #{attempt + 1}: {r['seconds']:7.1f} s  {r['tokens_per_s']:8.1f} tok/s  "
                      f"peak {r['peak_gib']:.2f} GiB (after load {r['after_load_gib']:.2f})  {r['steps']} steps  "
                      f"(load avg before: {load:.1f})", flush=True)
                best = results.get((stage, who))
                if best is None or r["seconds"] < best["seconds"]:
                    results[(stage, who)] = r
    for stage in stages:
        trl_r, synth_r = results[(stage, "trl")], results[(stage, "synth")]
        print(f"{stage}: synth {synth_r['tokens_per_s'] / trl_r['tokens_per_s']:.2f}x TRL-default tokens/s; "
              f"peak memory {synth_r['peak_gib'] / trl_r['peak_gib']:.2f}x")


if __name__ == "__main__":
    main()
