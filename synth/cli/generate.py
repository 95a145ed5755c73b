"""Command: generate (answers for an instruction dataset; see synth/generate/responses.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli.common import command, console
from synth.cli.llm_options import (
    BackendName,
    BaseUrl,
    Batch,
    CacheDir,
    Concurrency,
    MaxTokens,
    Model,
    NoCache,
    Out,
    Seed,
    Temperature,
    make_llm,
    uses_embedded_default,
)


def few_shot_help() -> str:
    """--few-shot's help: what the embedded default model (a base model) is prompted with when none is given."""
    import json

    from synth.paths import templates_dir

    path = templates_dir() / "fewshot" / "responses.jsonl"
    try:
        shown = "; ".join(json.dumps(json.loads(line)["instruction"]) for line in path.open(encoding="utf-8") if line.strip())
    except (OSError, ValueError, KeyError):  # a broken install must not break every command's --help
        shown = ""
    return ("JSONL/CSV of solved examples (instruction, response) sent before each instruction. Default: none, "
            "except for the embedded default model (a base model), which is prompted with the shipped examples "
            "in templates/fewshot/responses.jsonl" + (f" ({shown})." if shown else "."))


@command("generate")
def generate(
    dataset: Annotated[
        str, typer.Argument(help="SFT dataset (messages; TRL, LLaVA, sharegpt, OpenAI layouts) or a table with an 'instruction' column.")
    ],
    out: Out,
    model: Model = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.7,
    seed: Seed = None,
    n: int = typer.Option(1, "--n", min=1, help="Answers per instruction (one output record each)."),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", min=0.0, max=1.0,
        help="Nucleus sampling: draw only from the most likely tokens that together reach this probability "
        "(0-1; default: the backend's).",
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per forward pass (local)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt for conversations without one."),
    few_shot: Optional[Path] = typer.Option(None, "--few-shot", help=few_shot_help()),
    regenerate: bool = typer.Option(False, "--regenerate", help="Replace existing answers too."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep answers cut at --max-tokens."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to read when the source has several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Fill in (or --regenerate) the assistant answers of an instruction dataset with an LLM; writes OUT with
    usage.json, rejects.jsonl and failures.jsonl inside.

    With no --base-url, --backend or --model, answers come from the embedded Gemma 3 270M, a base model: each
    instruction follows the shipped few-shot examples (see --few-shot) as "### Instruction / ### Response"
    text (templates/chat/base.jinja)."""
    from synth.data import check_output, open_source
    from synth.generate.responses import ResponsesConfig, default_few_shot, generate_responses, load_few_shot

    check_output(out, overwrite)  # fail before reading data or loading a model
    source = open_source(dataset, split, limit=limit)
    if few_shot is not None:
        examples = load_few_shot(few_shot)
    elif uses_embedded_default(backend, model, base_url):
        examples = default_few_shot()  # the embedded default is a base model: it needs examples
    else:
        examples = []
    config = ResponsesConfig(
        system=system,
        regenerate=regenerate,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        seed=seed,
        keep_truncated=keep_truncated,
        few_shot=examples,
    )
    options = {"batch_size": batch_size} if batch_size else {}
    llm = make_llm(backend, model, base_url, concurrency, cache_dir, no_cache, batch, **options)
    try:
        result = generate_responses(source, out, llm, config, overwrite=overwrite, console=console)
    finally:
        llm.close()
    dropped, failed = result.stats["dropped"], result.stats["failed"]
    console.print(
        f"wrote {result.written:,} samples to {result.out} in {result.seconds:.1f} s"
        + (f"; dropped {sum(dropped.values()):,} ({_counts(dropped)}) → {result.rejects}" if dropped else "")
        + (f"; failed {sum(failed.values()):,} ({_counts(failed)}; a rerun retries them) → {result.failures}" if failed else "")
    )


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
