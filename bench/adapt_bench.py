"""Adaptation throughput: the engine (`synth.adapt.adapt`) vs a plain Python loop, measured in one run.

Both sides read the same source from disk, render with the same compiled templates and the same variant
choice (`synth.adapt.Renderer.render_record`), encode meta with the same `Renderer.meta_json`, and write
the same `save_to_disk` dataset (same features, same rows: checked). The baseline does that work and no
more: it iterates the rows one by one (`for row in dataset`), keeps each sample as a plain dict in the
output layout and builds the dataset with `Dataset.from_list(rows, features=sft_features(...))` (the
obvious hand-written script; no pydantic round trip, which the engine does not do either). The engine
maps Arrow batches (`Dataset.map(batched=True)`) and builds each batch's output as one pyarrow table; it
also writes `report.json` and reads its output back, which the baseline skips.

    .venv/bin/python bench/adapt_bench.py            # 100k text records, 2k image records
    .venv/bin/python bench/adapt_bench.py --quick    # 5k / 200, a smoke run
    .venv/bin/python bench/adapt_bench.py --quick --profile   # + the engine's cProfile top functions

Rates are given by wall time and by CPU time (`time.process_time`), the steadier one on a loaded machine.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

WORDS = [
    "river",
    "city",
    "council",
    "library",
    "bridge",
    "museum",
    "garden",
    "station",
    "market",
    "harbour",
    "valley",
    "forest",
    "mountain",
    "school",
    "engine",
    "signal",
    "window",
    "letter",
    "summer",
    "winter",
    "morning",
    "evening",
    "festival",
    "village",
    "island",
    "castle",
    "tower",
    "road",
]


def make_text_source(folder: Path, count: int) -> Path:
    """SQuAD-shaped rows (context, question, answers) as Parquet."""
    from datasets import Dataset

    rng = random.Random(0)
    rows = []
    for i in range(count):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))) + "."
        answer = rng.choice(WORDS)
        rows.append(
            {
                "id": f"t{i}",
                "context": context,
                "question": f"Which {rng.choice(WORDS)} is near the {rng.choice(WORDS)}?",
                "answers": {"text": [answer], "answer_start": [0]},
            }
        )
    path = folder / "text.parquet"
    Dataset.from_list(rows).to_parquet(str(path))
    return path


def make_image_source(folder: Path, count: int, size: int = 128) -> Path:
    """Shapes-like rows (image bytes + three QA pairs) as a save_to_disk folder."""
    from datasets import Dataset, Features, Image, List, Value
    from PIL import Image as PILImage
    from PIL import ImageDraw

    rng = random.Random(0)
    colors = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60)}

    def rows():
        for i in range(count):
            image = PILImage.new("RGB", (size, size), (250, 250, 250))
            draw = ImageDraw.Draw(image)
            name = rng.choice(list(colors))
            x, y = rng.randint(0, size // 2), rng.randint(0, size // 2)
            draw.ellipse((x, y, x + size // 3, y + size // 3), fill=colors[name])
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            qa = [
                {"question": "What color is the circle?", "answer": name},
                {"question": "How many circles are there?", "answer": "1"},
                {"question": "Is there a square?", "answer": "no"},
            ]
            yield {"id": f"img{i}", "image": {"bytes": buf.getvalue(), "path": None}, "qa": qa}

    qa_feature = List({"question": Value("string"), "answer": Value("string")})
    features = Features({"id": Value("string"), "image": Image(), "qa": qa_feature})
    path = folder / "images"
    Dataset.from_generator(rows, features=features).save_to_disk(str(path))
    return path


class Timer:
    """Wall and CPU time (`time.process_time`: this process only, so not the workers of num_proc > 1)
    of a block; CPU time is the steadier figure on a shared, loaded machine."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class Best:
    """The fastest of several timed runs (wall and CPU each their own minimum)."""

    def __init__(self, timers: list[Timer]):
        self.wall = min(t.wall for t in timers)
        self.cpu = min(t.cpu for t in timers)


def run_engine(source: Path, template: str, out: Path, num_proc: int, profile: bool = False):
    from synth.adapt import adapt

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    with Timer() as timer:
        result = adapt(source, template, out, num_proc=num_proc, overwrite=True)
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return timer, result.samples


def run_loop(source: Path, template: str, out: Path):
    """The baseline: a plain Python loop over the rows with the same rendering."""
    with Timer() as timer:
        count = loop_adapt(source, template, out)
    return timer, count


def loop_adapt(source: Path, template: str, out: Path) -> int:
    from datasets import Dataset, Image

    from synth.adapt import Renderer, class_list, load_template_set
    from synth.data import OutputFolder, base_dir_of, save
    from synth.data.reader import source_label
    from synth.io import read_dataset
    from synth.records import sft_features

    ts = load_template_set(template)
    dataset = read_dataset(source)
    if ts.multimodal:
        dataset = dataset.cast_column("image", Image(decode=False))
    classes = class_list(dataset, ts)[0]  # as the engine reads it (classification, nli)
    renderer = Renderer(ts, seed=0, source_name=source_label(str(source)), base_dir=base_dir_of(source),
                        classes=classes)  # meta.source: the stable name the engine records
    rows = []
    for index, row in enumerate(dataset):
        record_id = str(row.get("id") or f"row-{index}")
        for s in renderer.render_record(row, record_id):
            sample = {"id": s["id"], "messages": s["messages"]}
            if ts.multimodal:
                sample["images"] = s["images"]
            sample["meta"] = renderer.meta_json(s["meta"])
            rows.append(sample)
    with OutputFolder(out, overwrite=True) as folder:
        save(Dataset.from_list(rows, features=sft_features(ts.multimodal)), folder.path)
    return len(rows)


def same_output(engine_out: Path, loop_out: Path) -> bool:
    """Both sides wrote the same rows (same order, same features)."""
    from datasets import load_from_disk

    a, b = load_from_disk(str(engine_out)), load_from_disk(str(loop_out))
    return a.features == b.features and a.data.table.equals(b.data.table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (5k text, 200 images)")
    parser.add_argument("--text", type=int, default=None, help="text records (default 100000)")
    parser.add_argument("--images", type=int, default=None, help="image records (default 2000)")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes for the engine")
    parser.add_argument("--profile", action="store_true", help="print the engine's cProfile top functions")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternated; the best counts")
    args = parser.parse_args()
    n_text = args.text or (5_000 if args.quick else 100_000)
    n_images = args.images or (200 if args.quick else 2_000)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    work = Path(tempfile.mkdtemp(prefix="adapt-bench-"))
    try:
        console.print(f"building sources: {n_text:,} text records, {n_images:,} image records ...")
        cases = [
            ("text", "text_qa_extractive", make_text_source(work, n_text), n_text),
            ("image", "vqa_open", make_image_source(work, n_images), n_images),
        ]
        table = Table(
            title=f"synth adapt vs plain Python loop (engine num_proc={args.num_proc}, one run, "
            f"{args.repeats} alternated runs each, best)"
        )
        columns = ["source", "template", "records", "samples", "engine rec/s", "loop rec/s", "ratio"]
        columns += ["engine rec/s (CPU)", "loop rec/s (CPU)", "ratio (CPU)"]
        for column in columns:
            table.add_column(column, justify="right", no_wrap=True)
        for kind, template, source, count in cases:
            # Read each source once untimed: the first read converts Parquet into the `datasets` cache,
            # which would otherwise be charged to whichever side runs first.
            from synth.io import read_dataset

            read_dataset(source)
            # Alternate the sides (engine, loop, loop, engine, ...) so load changes hit both; best of each.
            engines, loops = [], []
            for rep in range(args.repeats):
                order = ("engine", "loop") if rep % 2 == 0 else ("loop", "engine")
                for side in order:
                    if side == "engine":
                        timer, samples = run_engine(
                            source, template, work / f"{kind}-engine", args.num_proc, args.profile and rep == 0
                        )
                        engines.append(timer)
                    else:
                        timer, loop_samples = run_loop(source, template, work / f"{kind}-loop")
                        loops.append(timer)
            assert samples == loop_samples, (samples, loop_samples)
            assert same_output(work / f"{kind}-engine", work / f"{kind}-loop"), f"{kind}: outputs differ"
            engine = Best(engines)
            loop = Best(loops)
            table.add_row(
                kind,
                template,
                f"{count:,}",
                f"{samples:,}",
                f"{count / engine.wall:,.0f}",
                f"{count / loop.wall:,.0f}",
                f"{loop.wall / engine.wall:.2f}x",
                f"{count / engine.cpu:,.0f}",
                f"{count / loop.cpu:,.0f}",
                f"{loop.cpu / engine.cpu:.2f}x",
            )
        console.print(table)
        console.print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            "times include reading the source and writing the output; both outputs checked identical; "
            "CPU = process_time of this process (excludes num_proc workers)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
