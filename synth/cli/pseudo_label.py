"""Command: pseudo-label (gated answers for unlabeled questions; see synth/generate/pseudo_label.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli.common import command, console
from synth.cli.llm_options import (
    PANEL,
    BackendName,
    BaseUrl,
    Batch,
    CacheDir,
    Concurrency,
    Model,
    NoCache,
    Out,
    Seed,
    make_llm,
)


@command("pseudo-label")
def pseudo_label(
    dataset: Annotated[str, typer.Argument(help="SFT dataset whose last turn is a question (or answered, with --hide-labels).")],
    out: Out,
    model: Model = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    seed: Seed = None,
    adapter: Optional[Path] = typer.Option(
        None, "--adapter", help="LoRA adapter folder on top of --model (local backend); --model may also be the "
        "adapter folder itself.", rich_help_panel=PANEL),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Token limit of each sampled answer.", rich_help_panel=PANEL),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature (> 0 for several samples).",
                                      rich_help_panel=PANEL),
    samples: int = typer.Option(5, "--samples", min=1, help="Answers sampled per question (they vote)."),
    gate: str = typer.Option("agreement", "--gate", help="agreement (self-consistency) | score (LLM judge) | both."),
    min_agreement: float = typer.Option(0.6, "--min-agreement", min=0.0, max=1.0,
                                        help="Agreement gate: the majority's share of the samples needed."),
    threshold: float = typer.Option(6.0, "--threshold", min=0.0, max=10.0, help="Score gate: keep judge scores >= this."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Score gate: the judge (same backend and "
                                              "server; default: the labelling model)."),
    hide_labels: bool = typer.Option(False, "--hide-labels", help="Drop each record's final answer first (it is "
                                     "only compared, in aggregate, with the kept answers: label_check in report.json)."),
    extract: str = typer.Option("line", "--extract", help="line: vote on the reply's first line | full: the whole reply."),
    few_shot: Optional[Path] = typer.Option(None, "--few-shot", help="JSONL/CSV of solved examples (instruction, response)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt for conversations without one."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per forward pass (local)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to read when the source has several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Answer unlabeled questions several times and keep the majority answer only when the samples agree
    (or a judge scores it well); writes OUT with report.json (kept share), rejects.jsonl and failures.jsonl."""
    from pydantic import ValidationError

    from synth.data import check_output, open_source
    from synth.errors import SynthError, validation_message
    from synth.generate.pseudo_label import PseudoLabelConfig
    from synth.generate.pseudo_label import pseudo_label as run
    from synth.generate.responses import load_few_shot

    check_output(out, overwrite)  # fail before reading data or loading a model
    try:
        config = PseudoLabelConfig(
            samples=samples, temperature=temperature, max_tokens=max_tokens, seed=seed, system=system,
            few_shot=load_few_shot(few_shot) if few_shot else [], hide_labels=hide_labels, gate=gate,
            min_agreement=min_agreement, threshold=threshold, extract=extract,
        )
    except ValidationError as e:
        raise SynthError(validation_message(e, "pseudo-label options")) from None
    source = open_source(dataset, split, limit=limit)
    options = {"batch_size": batch_size} if batch_size else {}
    if adapter is not None:
        options["adapter"] = str(adapter)
    llm = make_llm(backend, model, base_url, concurrency, cache_dir, no_cache, batch, **options)
    judge = None
    if judge_model and config.gate != "agreement":
        judge = make_llm(backend, judge_model, base_url, concurrency, cache_dir, no_cache, batch)
    try:
        result = run(source, out, llm, config, judge_backend=judge, overwrite=overwrite, console=console)
    finally:
        llm.close()
        if judge is not None:
            judge.close()
    report = result.report
    share = f" ({report['kept_share']:.0%} of {report['asked']:,} asked)" if report["kept_share"] is not None else ""
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(report["rejected"].items(), key=lambda kv: -kv[1]))
    check = report.get("label_check")
    console.print(
        f"kept {report['kept']:,} pseudo-labels{share} → {result.out}"
        + (f"; dropped {sum(report['rejected'].values()):,} ({dropped})" if dropped else "")
        + (f"; failed {sum(report['failed'].values()):,} (a rerun retries them)" if report["failed"] else "")
    )
    if check and check["kept"]:
        console.print(
            f"against the hidden labels: kept {check['kept_accuracy']:.0%} correct; all majority answers "
            f"{check['majority_accuracy']:.0%}"
        )
