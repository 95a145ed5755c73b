"""Commands: generate (answers for an instruction dataset; see synth/generate/responses.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console


@command("generate")
def generate(
    dataset: str = typer.Argument(..., help="SFT dataset (messages) or a JSONL/CSV/Parquet with an 'instruction' column."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder."),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="openai | local (default: openai with --base-url, else the embedded local model)."
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (openai) or Hub id / folder (local)."),
    base_url: Optional[list[str]] = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL; repeat for replicas of one model."
    ),
    n: int = typer.Option(1, "--n", min=1, help="Answers per instruction (one output record each)."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="0 = greedy."),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Parallel requests (openai)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per forward pass (local)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt for conversations without one."),
    few_shot: Optional[Path] = typer.Option(
        None, "--few-shot", help="JSONL/CSV of solved examples (instruction, response) sent before each instruction."
    ),
    regenerate: bool = typer.Option(False, "--regenerate", help="Replace existing answers too."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep answers cut at --max-tokens."),
    split: Optional[str] = typer.Option(None, "--split"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Request cache folder (default: user cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the request cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Fill in (or --regenerate) the assistant answers of an instruction dataset with an LLM."""
    from synth.generate.responses import ResponsesConfig, default_few_shot, generate_responses, load_few_shot
    from synth.io import check_output
    from synth.llm.embedded import EMBEDDED_MODEL
    from synth.llm.factory import make_backend

    check_output(out, overwrite)  # fail before loading a model
    options = {"batch_size": batch_size} if batch_size else {}
    llm = make_backend(
        backend, model, base_url, concurrency=concurrency, cache_dir=cache_dir, cache=not no_cache, **options
    )
    if few_shot is not None:
        examples = load_few_shot(few_shot)
    elif backend in (None, "local") and not base_url and (model or EMBEDDED_MODEL) == EMBEDDED_MODEL:
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
    try:
        result = generate_responses(
            dataset, out, llm, config, split=split, limit=limit, overwrite=overwrite, console=console
        )
    finally:
        llm.close()
    dropped = result.stats["dropped"]
    console.print(
        f"wrote {result.written:,} samples to {result.out} in {result.seconds:.1f} s"
        + (f"; dropped {sum(dropped.values()):,} ({', '.join(f'{k}: {v}' for k, v in dropped.items())})"
           f" → {result.rejects}" if dropped else "")
    )
