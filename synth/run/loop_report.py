"""The end-of-loop tables, from the manifest alone (so ``synth run --status`` shows them for any loop run).

1. per round: the rows model k+1 trained on, its training tokens and time, its held-out scores (exact
   match with its 95% interval, reference log-likelihood per token, DPO reward accuracy when preferences
   were scored) and the change from the model before it, with McNemar's p on the same rows; model 0 first
   when it was scored;
2. per round and per-round stage: read → kept, the kept share, what each gate dropped, by reason, and for
   a pseudo_label stage with hidden labels the share of kept labels that match them ("right").
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from synth.run.progress import _duration


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pts(value) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


def _num(value, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _signed(value) -> str:
    return "" if value is None else f"{value:+.3f}"


def _interval(metrics: dict, key: str) -> str:
    """The 95% interval of a share, in points: "46-65"."""
    interval = (metrics.get("intervals") or {}).get(key)
    return "" if not interval else f"{100 * interval[0]:.0f}-{100 * interval[1]:.0f}"


def _p_value(test: dict | None) -> str:
    """McNemar's p of the change from the model before; "n.s.": not distinguishable from zero."""
    if not test:
        return ""
    return f"{test['p_value']:.2g}" + ("" if test["distinguishable"] else " n.s.")


def loop_tables(manifest: dict[str, Any]) -> Group:
    rounds = manifest.get("rounds") or []
    base = manifest.get("base_eval")
    best = manifest.get("best") or {}
    stopped = manifest.get("stopped") or {}
    dpo = any("reward_accuracy" in (r.get("eval") or {}) and (r.get("eval") or {}).get("reward_accuracy") is not None
              for r in rounds)
    title = f"loop {manifest.get('name')}: {manifest.get('state')}"
    if stopped.get("reason") == "patience":
        title += f", stopped by patience after round {stopped.get('after_round')}"
    if best:
        title += f"; best: model {best.get('model')} ({best.get('metric')} {_num(best.get('score'))})"
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 1, 0, 0))
    columns = ["round", "rows", "tokens", "train", "exact", "95%", "Δ", "p", "loglik", "Δ "]
    if dpo:
        columns += ["reward", "Δ  "]
    for column in columns:
        table.add_column(column, justify="left" if column == "round" else "right", no_wrap=True)
    if base:
        cells = ["base", "-", "-", "-", _pct(base.get("exact_match")), _interval(base, "exact_match"), "", "",
                 _num(base.get("mean_logprob_per_token")), ""]
        if dpo:
            cells += [_pct(base.get("reward_accuracy")), ""]
        table.add_row(*cells)
    for row in rounds:
        sft, ev, change = row.get("sft") or {}, row.get("eval") or {}, row.get("change") or {}
        dpo_step = row.get("dpo") or {}
        tokens = (sft.get("tokens") or 0) + (dpo_step.get("tokens") or 0)
        seconds = (sft.get("seconds") or 0) + (dpo_step.get("seconds") or 0)
        mark = "*" if best.get("round") == row.get("round") else ""
        cells = [f"{row.get('round')}{mark}" + ("" if row.get("state") == "done" else f" ({row.get('state')})"),
                 _num(sft.get("rows"), ",d"), _num(tokens or None, ",d"), _duration(seconds) if seconds else "-",
                 _pct(ev.get("exact_match")), _interval(ev, "exact_match"), _pts(change.get("exact_match")),
                 _p_value((row.get("change_test") or {}).get("exact_match")),
                 _num(ev.get("mean_logprob_per_token")), _signed(change.get("mean_logprob_per_token"))]
        if dpo:
            cells += [_pct(ev.get("reward_accuracy")), _pts(change.get("reward_accuracy"))]
        table.add_row(*cells)
    data = Table(title="data per round (each gate: read → kept)", title_justify="left", header_style="bold",
                 box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    checked = any(e.get("label_check") for r in rounds for e in (r.get("stages") or {}).values())
    columns = ("round", "stage", "read", "kept", "share", *(("right",) if checked else ()), "dropped, by reason")
    for column in columns:
        data.add_column(column, justify="right" if column in ("read", "kept", "share", "right") else "left",
                        overflow="fold")
    for row in rounds:
        for name, entry in (row.get("stages") or {}).items():
            counts = entry.get("counts") or {}
            read, kept = counts.get("read"), counts.get("kept")
            reasons = {**(counts.get("rejected") or {}), **{f"failed:{k}": v for k, v in (counts.get("failed") or {}).items()}}
            text = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]) or "-"
            cells = [str(row.get("round")), name, _num(read, ",d"), _num(kept, ",d"), _pct(kept / read) if read else "-"]
            if checked:  # kept pseudo-labels that match the hidden labels (a count only, no label is written)
                cells.append(_pct((entry.get("label_check") or {}).get("accuracy")))
            data.add_row(*cells, text)
    if any(row.get("change_test") for row in rounds):
        table.caption = ("95%: Wilson interval of exact match; p: McNemar's exact test of the change from the "
                         "model before, on the same held-out rows (n.s.: not distinguishable from zero)")
        table.caption_justify = "left"
    parts: list[Any] = [table]
    if data.row_count:
        parts.append(data)
    return Group(*parts)
