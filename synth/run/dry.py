"""``synth run --dry-run``: the whole recipe checked and planned, nothing sent, nothing written.

Validates the recipe (as a run does), opens the sources, runs the offline stages over a few records so
the LLM stages' prompts can be rendered from real inputs, and prints per stage the planned shards and an
estimate of requests and tokens (and cost, when a backend has ``prices``). LLM stages get a stand-in
backend that refuses to send; every file (datasets' own cache included) goes to a temporary folder that
is removed at the end.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from synth.run.adapters.base import Preview, StageContext
from synth.run.runner import prepare
from synth.run.shards import world_size_for

SAMPLE = 4


@contextlib.contextmanager
def _datasets_cache(folder: Path):
    """`datasets` caches what it reads (JSONL → Arrow) in its own cache: keep that in the temp folder."""
    import datasets.config as config

    old = config.HF_DATASETS_CACHE
    config.HF_DATASETS_CACHE = folder
    try:
        yield
    finally:
        config.HF_DATASETS_CACHE = old


def _cost(backend: dict[str, Any], preview: Preview) -> float | None:
    prices = backend.get("prices")
    if not prices or preview.prompt_tokens is None:
        return None
    from synth.llm.usage import Prices

    return Prices(**prices).cost(preview.prompt_tokens or 0, preview.completion_tokens or 0)


def _last_run_rows(run_dir: Path | None, stage: str) -> int | None:
    """The rows a stage wrote in the run folder's last run (its completion marker), if it has run."""
    from synth.run.manifest import read_json
    from synth.run.runner import STATE_DIR

    marker = read_json(run_dir / STATE_DIR / f"{stage}.json") if run_dir is not None else None
    return ((marker or {}).get("output") or {}).get("rows")


def _mix_sources(spec, read_in_place: dict[str, int | None], planned: dict[str, int | None],
                 run_dir: Path | None) -> list[dict[str, Any]]:
    """Each source of a mix and its rows: a dataset read in place is counted; another stage's output is
    counted from the run folder's last run, else it is "not yet built" (with the planned estimate of an
    offline stage: `planned`)."""
    out = []
    for source in spec.sources:
        entry: dict[str, Any] = {"label": source.label, "input": source.input, "rows": None, "how": "not yet built",
                                 "planned": planned.get(source.input)}
        last = _last_run_rows(run_dir, source.input)
        if source.input in read_in_place:
            entry.update(rows=read_in_place[source.input], how="")
        elif last is not None:
            entry.update(rows=last, how="last run")
        out.append(entry)
    return out


def plan_dry_run(path, overrides: list[str] | None = None, runs_dir: Path | None = None,
                 name: str | None = None) -> list[dict[str, Any]]:
    """Per stage: type, inputs, planned rows and shards, and for LLM stages prompts and estimates; a mix's
    sources with their rows (`runs_dir`, `name`: where an earlier run's outputs are counted)."""
    from synth.data import quiet_datasets
    from synth.run.runner import RunOptions, run_dir_for

    plan = prepare(path, overrides)
    run_dir = run_dir_for(plan, RunOptions(name=name, runs_dir=runs_dir)) if runs_dir is not None else None
    recipe = plan.recipe
    rows: dict[str, int | None] = {}
    samples: dict[str, list[dict] | None] = {}
    sources: dict[str, Any] = {}
    read_in_place: dict[str, int | None] = {}  # source stages: rows counted
    planned: dict[str, int | None] = {}  # offline stages fed by real records: rows estimated from a sample
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="synth-dry-run-") as tmp, _datasets_cache(Path(tmp) / "datasets"), \
            quiet_datasets():
        for name in plan.order:
            spec = plan.specs[name]
            from synth.run.adapters import registry

            adapter = registry()[spec.type]
            ctx = StageContext(run_dir=Path(tmp), cache_dir=Path(tmp) / "cache", seed=recipe.seed,
                               recipe_dir=plan.loaded.base_dir, backends=plan.backends, stage=name, dry_run=True)
            entry: dict[str, Any] = {"name": name, "type": spec.type, "inputs": adapter.inputs(spec), "shards": 1,
                                     "llm": adapter.uses_llm(spec), "prompts": [], "note": ""}
            if adapter.source:
                ref = adapter.source_ref(spec)
                src = ref.open(allow_empty=True)
                sources[name], rows[name] = src, src.num_rows
                read_in_place[name] = src.num_rows
                samples[name] = [r for _, r in zip(range(SAMPLE), src.records())]
                entry["rows_in"] = None
                entry["rows_out"] = src.num_rows
                out.append(entry)
                continue
            deps = adapter.inputs(spec)
            rows_in = rows.get(deps[0]) if deps else None
            limit = getattr(spec, "limit", None)
            if limit and rows_in is not None:
                rows_in = min(rows_in, limit)
            sample_in = samples.get(deps[0]) if deps else []
            src = sources.get(deps[0]) if deps else None
            entry["rows_in"] = rows_in
            if adapter.is_sharded(spec) and rows_in:
                size = spec.shard_size or (recipe.llm_shard_size if entry["llm"] else recipe.shard_size)
                entry["shards"] = world_size_for(rows_in, size)
            if entry["llm"]:
                if sample_in is None:
                    entry["note"] = "its input comes from an LLM stage: prompts are rendered when it runs"
                    preview = adapter.preview(spec, ctx, [], rows_in)
                else:
                    preview = adapter.preview(spec, ctx, sample_in, rows_in)
                entry["prompts"] = preview.prompts
                entry["note"] = entry["note"] or preview.note
                entry["requests"] = preview.requests
                entry["prompt_tokens"] = preview.prompt_tokens
                entry["completion_tokens"] = preview.completion_tokens
                backend = plan.backends.get(adapter.backend_name(spec) or "default", {})
                entry["model"] = backend.get("model")
                entry["cost"] = _cost(backend, preview)
                samples[name] = None
                rows[name] = rows_in
            else:
                produced = adapter.sample(spec, ctx, sample_in, src) if sample_in is not None else None
                samples[name] = produced
                if spec.type == "mix":
                    entry["mix_sources"] = _mix_sources(spec, read_in_place, planned, run_dir)
                if spec.type in ("mix", "export", "push"):
                    rows[name] = getattr(spec, "total", None) or rows_in
                elif produced is not None and sample_in:
                    rows[name] = None if rows_in is None else round(rows_in * len(produced) / len(sample_in))
                elif spec.type == "demo":
                    rows[name] = spec.count
                else:
                    rows[name] = rows_in
                sources[name] = src
                if produced is not None:
                    planned[name] = rows[name]
            entry["rows_out"] = rows[name]
            out.append(entry)
    return out


def dry_run_tables(entries: list[dict[str, Any]]) -> Table:
    from rich import box

    table = Table(title="dry run: nothing sent, nothing written", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("stage", "type", "reads", "rows in", "shards", "requests", "tokens", "cost"):
        table.add_column(column, justify="left" if column in ("stage", "type", "reads") else "right",
                         no_wrap=column != "reads")
    for e in entries:
        tokens = None
        if e.get("prompt_tokens") is not None:
            tokens = (e.get("prompt_tokens") or 0) + (e.get("completion_tokens") or 0)
        table.add_row(
            e["name"], e["type"], (", ".join(e["inputs"]) if len(e["inputs"]) <= 2 else f"{len(e['inputs'])} outputs") or "-",
            "-" if e.get("rows_in") is None else f"{e['rows_in']:,}",
            str(e["shards"]),
            "-" if e.get("requests") is None else f"~{e['requests']:,}",
            "-" if tokens is None else f"≤{tokens:,}",
            "-" if e.get("cost") is None else f"{e['cost']:,.4f}",
        )
    return table


def mix_sources_table(entries: list[dict[str, Any]]) -> Table | None:
    """Every mix source and its rows (or "(not yet built)": an upstream stage that has not run yet)."""
    from rich import box

    mixes = [e for e in entries if e.get("mix_sources")]
    if not mixes:
        return None
    table = Table(title="mix sources", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for column in ("mix", "source", "from", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left", no_wrap=True)
    for e in mixes:
        for source in e["mix_sources"]:
            if source["rows"] is not None:
                rows = f"{source['rows']:,}" + (f" ({source['how']})" if source["how"] else "")
            else:
                rows = "(not yet built" + (f"; ~{source['planned']:,} planned)" if source["planned"] is not None else ")")
            table.add_row(e["name"], source["label"], source["input"], rows)
    return table


def _clip(text: str, head: int = 600, tail: int = 2400) -> str:
    """A long prompt's start and end: the fixed scaffold comes first, the record's own part last."""
    if len(text) <= head + tail + 200:
        return text
    return f"{text[:head]}\n … ({len(text) - head - tail:,} characters left out) …\n{text[-tail:]}"


def dry_run(path, overrides: list[str] | None = None, console=None, prompts: int = 2, runs_dir: Path | None = None,
            name: str | None = None) -> list[dict[str, Any]]:
    """Plan the recipe and print the plan, the mixes' sources and a few rendered prompts per LLM stage."""
    from synth.console import Console

    console = console or Console()
    entries = plan_dry_run(path, overrides, runs_dir, name)
    console.print(dry_run_tables(entries))
    sources = mix_sources_table(entries)
    if sources is not None:
        console.print(sources)
    for e in entries:
        if not e["llm"]:
            continue
        head = f"[bold]{e['name']}[/] ({e['type']}, model {e.get('model') or '?'})"
        if e["note"]:
            head += f": {e['note']}"
        console.print(head, soft_wrap=True)
        for text in e["prompts"][:prompts]:
            console.print(_clip(text), markup=False, highlight=False, soft_wrap=True)
    console.print("tokens: prompt estimate (4 characters a token) plus max_tokens per request, an upper bound")
    return entries
