"""The end-of-run table of a Self-Instruct run (printed by `synth self-instruct`)."""

from __future__ import annotations


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
