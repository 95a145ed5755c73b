"""Dataset in, dataset out: the engine registry and `evolve_dataset` (the one reader → the stage → the one
writer). The output folder holds the evolved SFT dataset and, inside it, ``rejects.jsonl`` (eliminated
evolutions), ``failures.jsonl`` (requests that failed: retried by the next run), ``report.json`` (the
end-of-run table) and ``usage.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from synth.data import REPORT, USAGE, OutputFolder, Source, check_output, open_source, write_records
from synth.errors import SynthError, validation_message
from synth.generate.evolution.base import EvolutionStage
from synth.generate.evolution.evol_instruct import EvolInstruct
from synth.generate.evolution.mmevol import MMEvol
from synth.generate.evolution.report import EvolutionReport
from synth.llm.base import Backend
from synth.pipeline.llm_task import check_not_all_failed

ENGINES: dict[str, type[EvolutionStage]] = {"evol-instruct": EvolInstruct, "mmevol": MMEvol}


def make_stage(method: str, backend: Backend | None, config: dict[str, Any], progress=None) -> EvolutionStage:
    """The engine for `method` ('evol-instruct' or 'mmevol'); bad options become one clear error."""
    if method not in ENGINES:
        raise SynthError(f"unknown method '{method}'; use one of: {', '.join(ENGINES)}")
    try:
        return ENGINES[method](backend, config, progress=progress)
    except ValidationError as e:
        raise SynthError(validation_message(e, f"{method} options")) from None


def open_seeds(
    source: str | os.PathLike, config: dict[str, Any] | None = None, split: str | None = None, limit: int | None = None,
    *, subset: str | None = None, revision: str | None = None,
) -> Source:
    """The seed dataset (`subset`, `revision`: a Hub dataset's). With a ``*_column`` option the rows keep their
    own columns (no layout conversion), so the named columns are there to read."""
    named = any(k.endswith("_column") and v is not None for k, v in (config or {}).items())
    return open_source(source, split, config=subset, revision=revision, limit=limit, layout="raw" if named else None)


def evolve_dataset(
    source: str | os.PathLike | Source,
    out: str | Path,
    method: str,
    backend: Backend,
    config: dict[str, Any] | None = None,
    split: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress=None,
) -> EvolutionReport:
    """Evolve the seeds in `source` and write the kept samples to the folder `out` (see the module docs).
    Streams: seeds are evolved `chunk_size` at a time and written as they come. A run where every LLM
    request failed is an error and writes nothing."""
    from synth.llm.factory import backend_description

    out = check_output(out, overwrite, inputs=[source])
    config = dict(config or {})
    src = source if isinstance(source, Source) else open_seeds(source, config, split, limit)
    if method == "mmevol" and src.base_dir is not None:
        config.setdefault("base_dir", str(src.base_dir))
    stage = make_stage(method, backend, config, progress)
    with OutputFolder(out, overwrite) as folder:
        stage.rejects, stage.failures = folder.rejects, folder.failures
        written = write_records(
            stage.run(src.records()), folder.path, kind="sft", multimodal=method == "mmevol", scratch=folder.scratch("evolve")
        )
        check_not_all_failed(stage, written)
        summary = {
            **stage.report.as_dict(),
            "source": src.name,
            "model": backend.model_name,
            "usage": backend.usage.as_dict(),
            "config": stage.config.model_dump(mode="json"),
        }
        if method == "mmevol":
            summary["image_input"] = "image" if stage.show_image else "text"
        folder.write_json(REPORT, summary)
        folder.write_json(USAGE, {**backend_description(backend), **backend.usage.as_dict()})
    return stage.report
