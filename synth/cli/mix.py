"""Commands: mix (see synth/mix.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from synth.cli.common import command, console


def _backend_factory(model: str | None, base_url: str | None):
    """Backend for filters that call a model (judge, CapFilt captioner); built only when one asks."""

    def make():
        from synth.errors import SynthError
        from synth.llm.openai_compat import OpenAIBackend, OpenAIConfig

        if not model:
            raise SynthError(
                "a filter in this recipe needs an LLM: pass --model NAME (and --base-url URL for a local server)"
            )
        return OpenAIBackend(OpenAIConfig(model=model, base_urls=[base_url] if base_url else []))

    return make


def _print_report(result) -> None:
    from rich.table import Table

    table = Table(title=f"mix: {result.kind}, seed {result.seed}")
    table.add_column("source", style="bold")
    for name in ("read", "after filters", "after dedup", "in mix", "share"):
        table.add_column(name, justify="right")
    table.add_column("notes", style="dim")
    for s in result.sources:
        notes = []
        if s.upsampled:
            notes.append(f"+{s.upsampled:,} copies")
        if s.capped:
            notes.append("capped")
        table.add_row(
            s.name, f"{s.read:,}", f"{s.after_filters:,}", f"{s.after_dedup:,}", f"{s.in_mix:,}", f"{s.share:.1%}",
            ", ".join(notes),
        )
    table.add_row(
        "total",
        f"{sum(s.read for s in result.sources):,}",
        f"{sum(s.after_filters for s in result.sources):,}",
        f"{sum(s.after_dedup for s in result.sources):,}",
        f"{result.total:,}",
        "100.0%",
        "",
        style="green",
    )
    console.print(table)
    line = f"wrote train {result.train:,} + validation {result.validation:,} to [bold]{result.out}[/] (mix_report.json inside)"
    if result.rejects_file:
        line += f"; rejects: {result.rejects_file}"
    console.print(line, soft_wrap=True)


@command()
def mix(
    recipe: Path = typer.Argument(..., help="Mixture recipe (YAML): sources with weights or counts, filters, dedup, split."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (save_to_disk DatasetDict: train/validation)."),
    seed: int | None = typer.Option(None, help="Override the recipe's seed."),
    model: str | None = typer.Option(None, help="Model for LLM filters in the recipe (judge, capfilt captioner)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL for that model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a recipe value: path.to.key=value (repeatable)."),
) -> None:
    """Mix several SFT or preference datasets by a weighted recipe into one train/validation dataset."""
    import datasets

    from synth.mix import mix_file

    datasets.disable_progress_bars()  # our own table tells the story
    result = mix_file(recipe, out, set_, seed=seed, overwrite=overwrite, backend_factory=_backend_factory(model, base_url))
    _print_report(result)
