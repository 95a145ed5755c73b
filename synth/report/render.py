"""`synth report`: one self-contained HTML file (images inlined, no network) from one or more datasets.

Rendered with jinja2 from ``templates/report/`` with autoescaping on: every text in the page comes from
data (model output, user datasets), so none of it may become markup.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from synth.errors import SynthError, redact_data


@dataclass
class ReportResult:
    out: Path
    datasets: int
    samples: int
    chains: int
    pairs: int
    reject_groups: int
    images: int
    bytes: int
    seconds: float


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    from synth.paths import templates_dir

    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
    env.filters["pct"] = lambda v: f"{v:.3f}%"
    return env


def render(context: dict[str, Any]) -> str:
    try:
        return environment().get_template("report/report.html.jinja").render(context)
    except jinja2.TemplateError as e:
        raise SynthError(f"templates/report/report.html.jinja: cannot render the report: {e}") from e


def build_report(
    sources: list[str | os.PathLike], out: str | os.PathLike = "report.html", *, sample: int = 40, thumb_size: int = 160,
    title: str | None = None, seed: int = 0,
) -> ReportResult:
    """Read each dataset with its lineage and write the report to `out` (atomically)."""
    from synth import __version__
    from synth.io import atomic_path
    from synth.publish.lineage import describe
    from synth.report.collect import Collector

    if not sources:
        raise SynthError("nothing to report on: give one or more dataset folders (e.g. synth report demo/mix)")
    started = time.monotonic()
    lineages = [describe(path) for path in sources]
    names = [lin.name for lin in lineages]
    for i, lin in enumerate(lineages):  # two folders with one name (a/mix, b/mix): tell them apart
        if names.count(lin.name) > 1:
            lin.name = f"{lin.name} ({i + 1})"
    context = Collector(lineages, sample=sample, thumb_size=thumb_size, seed=seed).collect()
    context.update(
        title=title or "synth report: " + ", ".join(lin.name for lin in lineages),
        version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M"),
    )
    html = render(redact_data(context))  # failure details may quote a server that repeated the key
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return ReportResult(
        out=out, datasets=len(lineages), samples=len(context["samples"]), chains=len(context["chains"]),
        pairs=len(context["pairs"]), reject_groups=len(context["rejects"]), images=context["images"],
        bytes=len(html.encode()), seconds=time.monotonic() - started,
    )
