"""`build_preferences`: read a dataset, run a strategy (and the length filter), write the preference set.

The output folder appears whole or not at all (`synth.data.OutputFolder`) and holds the dataset (TRL's
conversational preference layout), ``rejects.jsonl`` (every drop with its reason and level),
``failures.jsonl`` (prompts whose requests failed: the next run retries them), ``report.json`` (counts
by reason, models, settings) and ``usage.json`` (requests, tokens, cost per backend). When every request
failed, nothing is written and the command fails with the reasons.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import SynthError
from synth.llm.base import Backend
from synth.pipeline import Rejected, run_stages
from synth.prefs.base import PreferenceStage


@dataclass
class PrefsResult:
    out: Path
    pairs: int
    report: dict[str, Any]
    seconds: float
    rejects: Path | None = None
    failures: Path | None = None
    usage: list[dict[str, Any]] = field(default_factory=list)


def stage_backends(stage: PreferenceStage) -> list[Backend]:
    """The distinct backends a strategy calls (for the usage report)."""
    found: list[Backend] = []
    candidates = [s.backend for s in getattr(stage, "samplers", [])]
    candidates += [getattr(stage, name, None) for name in ("judge", "splitter", "rewriter")]
    for backend in candidates:
        if backend is not None and all(backend is not b for b in found):
            found.append(backend)
    return found


def build_preferences(
    source: str | os.PathLike,
    out: str | os.PathLike,
    stage: PreferenceStage,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    max_length_ratio: float | None = None,
    show_progress: bool = True,
    console=None,
) -> PrefsResult:
    from synth.data import (
        FAILURES,
        REJECTS,
        REPORT,
        USAGE,
        OutputFolder,
        check_output,
        open_source,
        write_records,
    )
    from synth.llm.factory import report_usage
    from synth.pipeline.llm_task import check_not_all_failed
    from synth.prefs.length import LengthBalance
    from synth.prefs.perturb import PerturbStrategy
    from synth.progress import progress

    check_output(out, overwrite, inputs=[source])
    src = open_source(source, split, config=config, revision=revision, limit=limit)
    if src.kind == "preference":
        raise SynthError(f"{source}: is already a preference dataset (prompt/chosen/rejected); give an SFT dataset or raw QA rows")
    stage.prepare(src)  # e.g. perturb's vocabulary, from a first pass over the whole input
    stages = [stage] + ([LengthBalance(max_ratio=max_length_ratio)] if max_length_ratio else [])
    started = time.monotonic()
    with OutputFolder(out, overwrite) as folder:

        def on_bad(stub: dict, error) -> None:  # an unreadable row is skipped and counted, not fatal
            stage.stats.seen += 1
            stage.reject(stub, Rejected(getattr(error, "reason", "bad_record"), str(error)), level="record")

        total = src.num_rows if src.kind == "sft" else None
        with progress() as bar:
            task = bar.add_task(f"prefs ({stage.strategy})", total=total, tokens="", visible=show_progress)
            stage.progress = lambda: bar.advance(task)
            pairs = run_stages(stages, src.records(on_bad=on_bad), folder.rejects, folder.failures)
            written = write_records(pairs, folder.path, kind="preference", multimodal=src.multimodal,
                                    scratch=folder.scratch("write"))
        stage.progress = None
        check_not_all_failed(stage)
        seconds = time.monotonic() - started
        usage = [report_usage(b, console=console, title=f"LLM usage ({b.model_name})") for b in stage_backends(stage)]
        report = {
            "command": "prefs",
            "source": str(source),
            **stage.report(),
            "pairs": written,
            "config": stage.config.model_dump(),
            "max_length_ratio": max_length_ratio,
            "stages": {s.name: s.stats.as_dict() for s in stages},
            "seconds": round(seconds, 3),
        }
        if len(stages) > 1:  # the length filter's drops belong in the one table of reasons
            for reason, count in stages[1].stats.dropped.items():
                report["dropped"][reason] = report["dropped"].get(reason, 0) + count
        if isinstance(stage, PerturbStrategy) and stage.vocabulary is not None:
            report["vocabulary"] = stage.vocabulary.as_dict()
        folder.write_json(REPORT, report)
        if usage:
            folder.write_json(USAGE, usage)
        had_rejects, had_failures = folder.rejects.count > 0, folder.failures.count > 0
    final = Path(out)
    return PrefsResult(
        out=final,
        pairs=written,
        report=report,
        seconds=seconds,
        rejects=final / REJECTS if had_rejects else None,
        failures=final / FAILURES if had_failures else None,
        usage=usage,
    )
