"""CapFilt scoring throughput: synth vs a plain transformers loop (and data-juicer when installed), one run.

Data: N drawn JPEGs of 320-640 px a side (shapes on a gradient, quality 85-95) with a caption each.
Model: a CLIP ViT-B/32-shaped model built from its config (``CLIPConfig()``'s defaults are ViT-B/32: 12
vision layers of 768, patch 32, 224 px; 12 text layers of 512) with random weights (weights do not change
speed) and a word-level tokenizer trained here (49,408 entries), saved to a folder every side loads.

Sides, each scoring the same N pairs at batch 32:

- plain: per batch, decode with PIL, ``CLIPProcessor(text, images)``, ``CLIPModel(**inputs)``, cosine of
  ``image_embeds`` and ``text_embeds`` (the loop a user writes).
- synth fp32: `CapFilt` (``threshold: T``), default settings on a CPU (today's exact scores), through its
  own batching, decoding and scoring (`decoded_batches` + `score_batch`: every pair's score, kept or not).
- synth bf16: `CapFilt` with ``dtype: bfloat16`` (bf16 autocast over fp32 weights; AVX512-BF16 / AMX);
  pairs within ``exact_margin`` (0.005) of T are scored again in fp32.
- synth bf16 + compile: the same with ``compile: true`` (torch.compile of both encoders, batches padded to 32);
  its compile time (once per process; inductor's disk cache makes later processes quicker) is measured before
  timing, like the model loads, and printed apart.
- synth bf16 + 1 decode worker: the same with ``decode_workers: 1`` (decoding beside the model).
- data-juicer (``--data-juicer PYTHON``: a Python with ``py-data-juicer`` installed, run as its own process
  that scores the chunks it is sent): ``image_text_similarity_filter``'s ``compute_stats_single`` per
  sample, as its executor calls it, on the same JPEGs written to files (it reads images from paths). Its
  score is ``logits_per_text / 100``: the model's logit scale is set to 100 (as in OpenAI's CLIP) so that
  it equals the cosine.

Interleaved: each chunk of ``--chunk`` pairs goes through every side in turn (the order rotating), so load
changes on a shared machine hit all sides; a side's time is the sum of its chunks (models loaded before
timing). Agreement: the share of pairs with the same keep decision as the plain fp32 loop at one threshold
T (the median of the plain scores of the first chunk, computed before timing: the hardest place, half the pairs
on each side), and the largest score difference.

    nice python bench/capfilt_bench.py --n 256            # what docs/benchmarks.md reports
    python bench/capfilt_bench.py --device cuda --n 5000 --chunk 1000  # the GPU mode (fp16, batch 256, decode
                                                                        # workers, GPU busy %)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import resource
import subprocess
import tempfile
import time
from pathlib import Path

WORDS = ("red blue green yellow purple orange grey black white circle square triangle star hexagon small large "
         "two three on in next to above below a an the photo picture of with and background").split()


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        w, h = rng.randint(320, 640), rng.randint(320, 640)
        image = Image.new("RGB", (w, h))
        draw = ImageDraw.Draw(image)
        top, bottom = [rng.randint(0, 255) for _ in range(3)], [rng.randint(0, 255) for _ in range(3)]
        for y in range(0, h, 4):
            t = y / h
            draw.rectangle((0, y, w, y + 4), fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
        for _ in range(rng.randint(3, 9)):
            x0, y0 = rng.randint(0, w - 40), rng.randint(0, h - 40)
            box = (x0, y0, x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2))
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=rng.randint(85, 95))
        caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 16)))
        pairs.append({"id": f"p{i}", "image": {"bytes": buf.getvalue(), "path": None}, "caption": caption})
    return pairs


def make_model(folder: Path) -> str:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    while len(vocab) < 49408:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0})
    model = CLIPModel(config)
    model.logit_scale.data.fill_(math.log(100.0))  # OpenAI CLIP's trained scale: data-juicer's score / 100
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=fast).save_pretrained(folder)
    return str(folder)


class Plain:
    name = "plain transformers loop"

    def __init__(self, model: str, device: str):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch, self.device = torch, device
        self.model = CLIPModel.from_pretrained(model).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model)

    def score(self, pairs: list[dict]) -> list[float]:
        from PIL import Image

        out = []
        for start in range(0, len(pairs), 32):
            batch = pairs[start:start + 32]
            images = [Image.open(io.BytesIO(p["image"]["bytes"])).convert("RGB") for p in batch]
            inputs = self.processor(text=[p["caption"] for p in batch], images=images, return_tensors="pt",
                                    padding=True, truncation=True, max_length=77).to(self.device)
            with self.torch.no_grad():
                result = self.model(**inputs)
            out += (result.image_embeds * result.text_embeds).sum(-1).tolist()
        return out


class Synth:
    def __init__(self, model: str, device: str, threshold: float, **options):
        from synth.clean.capfilt import CapFilt

        # batch 32 on a CPU, like the plain loop; on CUDA CapFilt's own (batch_size: auto), within --chunk
        batch = 32 if device == "cpu" else "auto"
        self.stage = CapFilt({"model": model, "threshold": threshold, "batch_size": batch, "device": device, **options})
        self.name = "synth CapFilt " + (", ".join(f"{k}={v}" for k, v in options.items()) or "defaults (fp32)")
        self.stage.scorer  # noqa: B018 (load the model before timing)
        started = time.perf_counter()
        if self.stage.decode_workers() or options.get("compile"):  # start workers / compile before timing too
            self.score(make_pairs(2, seed=99))
        self.warm_up = time.perf_counter() - started

    def score(self, pairs: list[dict]) -> list[float]:
        out = []
        for batch, decoded in self.stage.decoded_batches([dict(p) for p in pairs]):
            out += [result[0].score for result in self.stage.score_batch(batch, decoded)]
        return out


DATA_JUICER_WORKER = """
import json, resource, sys
from data_juicer.ops.filter.image_text_similarity_filter import ImageTextSimilarityFilter
from data_juicer.utils.constant import Fields, StatsKeys
model, pairs_file = sys.argv[1], sys.argv[2]
pairs = [json.loads(line) for line in open(pairs_file)]
op = ImageTextSimilarityFilter(hf_clip=model, min_score=-1.0, max_score=1.0)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    start, stop = json.loads(line)
    scores = []
    for pair in pairs[start:stop]:
        sample = {"text": "<__dj__image> " + pair["caption"] + " <|__dj__eoc|>", "images": [pair["path"]],
                  Fields.stats: {}}
        scores.append(op.compute_stats_single(sample)[Fields.stats][StatsKeys.image_text_similarity][0])
    print(json.dumps({"scores": scores, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
"""


class DataJuicer:
    name = "data-juicer image_text_similarity_filter"

    def __init__(self, python: str, model: str, pairs: list[dict], folder: Path):
        rows = folder / "pairs.jsonl"
        with open(rows, "w") as f:
            for pair in pairs:
                path = folder / f"{pair['id']}.jpg"
                path.write_bytes(pair["image"]["bytes"])
                f.write(json.dumps({"caption": pair["caption"], "path": str(path)}) + "\n")
        self.index = {id(p): i for i, p in enumerate(pairs)}
        self.process = subprocess.Popen([python, "-c", DATA_JUICER_WORKER, model, str(rows)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self._reply()
        self.rss = 0

    def _reply(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit("data-juicer's worker stopped (see its output above)")
            if line.startswith("{"):
                return json.loads(line)

    def score(self, pairs: list[dict]) -> list[float]:
        start = self.index[id(pairs[0])]
        self.process.stdin.write(json.dumps([start, start + len(pairs)]) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        self.rss = reply["rss"]
        return reply["scores"]


class GpuBusy:
    """On CUDA: the GPU's utilisation (nvidia-smi, every 0.2 s) while a side scores, averaged per side."""

    def __init__(self):
        import shutil
        import threading

        self.samples: dict[str, list[int]] = {}
        self.side = None
        self.available = shutil.which("nvidia-smi") is not None
        if self.available:
            threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while True:
            side = self.side
            if side is not None:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True).stdout.strip()
                if out.isdigit():
                    self.samples.setdefault(side, []).append(int(out))
            time.sleep(0.2)

    def mean(self, side: str) -> str:
        values = self.samples.get(side)
        return f"{sum(values) / len(values):.0f}%" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip", nargs="*", default=[], help="sides to leave out: plain, fp32, bf16, compile, workers")
    parser.add_argument("--data-juicer", metavar="PYTHON", help="a Python with py-data-juicer installed")
    args = parser.parse_args()

    import torch

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    pairs = make_pairs(args.n)
    print(f"{args.n} pairs, {sum(len(p['image']['bytes']) for p in pairs) / len(pairs) / 1024:.0f} KB JPEG on average")
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp) / "clip-b32")
        bf16 = "bfloat16" if args.device == "cpu" else "float16"
        plain = Plain(model, args.device)
        first = sorted(plain.score(pairs[:args.chunk]))
        # between the two middle scores: no pair sits exactly on T (fp32 sums in another order move ~1e-8)
        threshold = (first[len(first) // 2 - 1] + first[len(first) // 2]) / 2
        sides = {"plain": lambda: plain, "fp32": lambda: Synth(model, args.device, threshold),
                 "bf16": lambda: Synth(model, args.device, threshold, dtype=bf16),
                 "compile": lambda: Synth(model, args.device, threshold, dtype=bf16, compile=True),
                 "workers": lambda: Synth(model, args.device, threshold, dtype=bf16,
                                          decode_workers=1 if args.device == "cpu" else 8)}
        if args.data_juicer:
            sides["data-juicer"] = lambda: DataJuicer(args.data_juicer, model, pairs, Path(tmp))
        runners = {key: make() for key, make in sides.items() if key not in args.skip}
        seconds = dict.fromkeys(runners, 0.0)
        scores: dict[str, list[float]] = {key: [] for key in runners}
        keys = list(runners)
        busy = GpuBusy() if args.device.startswith("cuda") else None
        for k, start in enumerate(range(0, args.n, args.chunk)):
            chunk = pairs[start:start + args.chunk]
            for key in keys[k % len(keys):] + keys[:k % len(keys)]:
                if busy:
                    busy.side = key
                started = time.perf_counter()
                scores[key] += runners[key].score(chunk)
                seconds[key] += time.perf_counter() - started
                if busy:
                    busy.side = None
        if "data-juicer" in runners:
            runners["data-juicer"].process.stdin.close()
            runners["data-juicer"].process.wait()
    reference = scores.get("plain") or scores[keys[0]]
    base = args.n / seconds[keys[0]]
    kept = sum(s >= threshold for s in reference)
    print(f"threshold T = {threshold:.5f} (plain keeps {kept} of {args.n}); score spread (std) "
          f"{(sum((s - sum(reference) / len(reference)) ** 2 for s in reference) / len(reference)) ** 0.5:.4f}")
    print(f"{'side':55} {'pairs/s':>8} {'x':>6} {'same keep':>10} {'max |diff|':>10}" + (" GPU busy" if busy else ""))
    for key in keys:
        rate = args.n / seconds[key]
        same = sum((a >= threshold) == (b >= threshold) for a, b in zip(scores[key], reference)) / len(reference)
        diff = max(abs(a - b) for a, b in zip(scores[key], reference))
        print(f"{runners[key].name:55} {rate:8.2f} {rate / base:6.2f} {same:10.2%} {diff:10.2e}"
              + (f" {busy.mean(key):>8}" if busy else ""))
    for key in keys:
        details = runners[key].stage.details() if isinstance(runners[key], Synth) else {}
        if details:
            print(f"{runners[key].name}: {details['fp32_rescored']} of {args.n} pairs scored in fp32 too "
                  f"(the first 32 to calibrate, then those within exact_margin {details['exact_margin']:.2e} of T)")
    if "compile" in runners:
        print(f"compile (once per process, before timing): {runners['compile'].warm_up:.1f} s")
    print(f"peak RSS of the synth and plain sides (one process): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GiB")
    if "data-juicer" in runners:
        print(f"peak RSS of data-juicer's process: {runners['data-juicer'].rss / 1024 / 1024:.2f} GiB")


if __name__ == "__main__":
    main()
