"""Command: self-instruct (see synth/generate/self_instruct/)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synth.cli.common import command, console
from synth.cli.llm_options import (
    PANEL,
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
)


@command("self-instruct")
def self_instruct_command(
    out: Out,
    model: Model = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    max_tokens: MaxTokens = 384,
    temperature: Temperature = 0.7,
    seed: Seed = 0,
    instance_max_tokens: int = typer.Option(
        512, "--instance-max-tokens", min=16, help="Token limit of each instance reply.", rich_help_panel=PANEL
    ),
    seeds: Optional[Path] = typer.Option(None, "--seeds", help="Seed tasks (JSONL); default: the built-in 48."),
    count: int = typer.Option(100, "--count", min=1, help="New instructions to keep."),
    rouge_threshold: float = typer.Option(
        0.7, "--rouge-threshold", min=0.0, max=1.0, help="Reject when ROUGE-L F against the pool exceeds this."
    ),
    text_only: bool = typer.Option(
        True, "--text-only/--multimodal", help="Reject instructions about images, files, audio, ..."
    ),
    top_p: float = typer.Option(
        0.5, "--top-p", min=0.0, max=1.0, help="Top-p of the instruction requests.", rich_help_panel=PANEL
    ),
    presence_penalty: float = typer.Option(
        2.0,
        "--presence-penalty",
        min=-2.0,
        max=2.0,
        help="Presence penalty of the instruction requests, where the backend has one (OpenAI-compatible "
        "servers; the local backend has none).",
        rich_help_panel=PANEL,
    ),
    max_instances: int = typer.Option(5, "--max-instances", min=1, help="Samples (instances) kept per instruction."),
    responses: bool = typer.Option(
        False,
        "--responses/--instance-outputs",
        help="Answer each instruction again with the LLM instead of keeping the instance output.",
    ),
    prompt_style: str = typer.Option("auto", "--prompt-style", help="auto, chat or continuation (base models)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Bootstrap new instruction data from seed tasks with an LLM (Self-Instruct); writes OUT with
    report.json, rejects.jsonl, failures.jsonl and self_instruct_tasks.jsonl inside."""
    from pydantic import ValidationError

    from synth.data import REJECTS, check_output
    from synth.errors import SynthError, validation_message
    from synth.generate.self_instruct import SelfInstructConfig, load_seed_tasks, run_self_instruct
    from synth.llm.factory import report_usage

    check_output(out, overwrite)
    try:
        config = SelfInstructConfig(
            count=count,
            concurrency=concurrency or 8,  # instruction requests sent together per round
            rouge_threshold=rouge_threshold,
            text_only=text_only,
            max_instances=max_instances,
            responses=responses,
            prompt_style=prompt_style,
            seed=seed or 0,
            temperature=temperature,
            top_p=top_p,
            presence_penalty=presence_penalty,
            instruction_max_tokens=max_tokens,
            instance_max_tokens=instance_max_tokens,
        )
    except ValidationError as e:
        raise SynthError(validation_message(e, "self-instruct options")) from e
    tasks = load_seed_tasks(seeds)
    llm = make_llm(backend, model, base_url, concurrency, cache_dir, no_cache, batch)
    try:
        result = run_self_instruct(llm, out, config, seeds=tasks, overwrite=overwrite)
        console.print(summary_table(result.stats))
        sampling = result.stats["sampling"]
        if not sampling["presence_penalty_applied"] and (
            sampling["presence_penalty"] or sampling["instance_presence_penalty"]
        ):
            console.print("[yellow]presence penalty not applied: this backend has none (OpenAI-compatible servers do)")
        report_usage(llm, console=console)
    finally:
        llm.close()
    rejects = out / REJECTS
    console.print(f"wrote {len(result.samples):,} samples to {out}" + (f" (rejects: {rejects})" if rejects.exists() else ""))


def summary_table(stats: dict):
    """The end-of-run table: generated, kept, rejected by reason, per step."""
    from rich.table import Table

    def reasons(counts: dict) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"

    def failed(step: dict) -> str:
        return f"; failed: {reasons(step['failed'])}" if step.get("failed") else ""

    gen, cls, inst = stats["instructions"], stats["classification"], stats["instances"]
    table = Table(
        title=f"Self-Instruct ({stats['model']}, {stats['prompt_style']} prompts, {stats['rounds']} rounds)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("step")
    table.add_column("in", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("dropped / notes")
    replies = (
        f"{gen['requests']:,} requests: {gen['failed_requests']:,} failed, {gen['empty_replies']:,} empty, "
        f"{gen['unparseable_replies']:,} without a list; {gen['truncated_items']:,} truncated items"
    )
    table.add_row("instruction replies", f"{gen['requests']:,}", f"{gen['parsed']:,} items", replies)
    extra = f"; {gen['surplus']:,} not needed" if gen["surplus"] else ""
    table.add_row(
        "instruction filters",
        f"{gen['parsed'] - gen['surplus']:,}",
        f"{gen['kept']:,}/{gen['target']:,}",
        reasons(gen["rejected"]) + extra,
    )
    table.add_row(
        "classification",
        f"{cls['tasks']:,}",
        f"{cls['classification']:,} yes",
        f"{cls['unclear']:,} unclear (as no); " + reasons(cls["rejected"]) + failed(cls),
    )
    dropped = inst.get("dropped_instances") or {}
    notes = reasons(inst["rejected"]) + failed(inst) + (f"; instances dropped: {reasons(dropped)}" if dropped else "")
    table.add_row("instances", f"{inst['tasks']:,}", f"{inst['kept']:,} tasks, {inst.get('instances', 0):,} instances", notes)
    if stats.get("responses"):
        answered = stats["responses"]
        table.add_row(
            "responses", f"{answered['seen']:,}", f"{answered['kept']:,}", reasons(answered["dropped"])
        )
    table.add_row("samples", "", f"{stats['samples']:,}", "")
    return table
