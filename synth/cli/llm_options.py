"""The LLM options every generating command shares (generate, evolve, self-instruct; the clean/judge and
prefs commands reuse them): the same flags, help and defaults everywhere. Use them as annotations:

    @command("thing")
    def thing(out: Out, model: Model = None, base_url: BaseUrl = None, backend: BackendName = None,
              concurrency: Concurrency = None, cache_dir: CacheDir = None, no_cache: NoCache = False,
              batch: Batch = False, max_tokens: MaxTokens = 512, temperature: Temperature = 0.7, seed: Seed = None):
        llm = make_llm(backend, model, base_url, concurrency, cache_dir, no_cache, batch)

`--max-tokens`, `--temperature` and `--seed` take the command's own default (what its replies need);
`--help` shows it. `-m` is always `--model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

PANEL = "LLM options"

Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (a dataset; its rejects, failures and report inside).")]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m",
        help="Model: a name the server at --base-url serves, or a Hub id / folder for --backend local "
        "(default: the embedded Gemma 3 270M; $OPENAI_MODEL for --backend openai).",
        rich_help_panel=PANEL,
    ),
]
BaseUrl = Annotated[
    Optional[list[str]],
    typer.Option("--base-url", help="OpenAI-compatible server URL; repeat for replicas of one model.", rich_help_panel=PANEL),
]
BackendName = Annotated[
    Optional[str],
    typer.Option(
        "--backend", help="openai | local (default: openai with --base-url, else the embedded local model).",
        rich_help_panel=PANEL,
    ),
]
Concurrency = Annotated[
    Optional[int],
    typer.Option("--concurrency", min=1, help="Requests in flight (default: the backend's; openai 16).", rich_help_panel=PANEL),
]
CacheDir = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Request cache folder (default: ~/.cache/synth/llm).", rich_help_panel=PANEL),
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the request cache.", rich_help_panel=PANEL)]
Batch = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Send requests as batch files through the server's batch API (about half price, slower; "
        "--backend openai). Ids are kept in CACHE_DIR/batches: a rerun resumes the same batches; "
        "`synth batches CACHE_DIR` lists them.",
        rich_help_panel=PANEL,
    ),
]
MaxTokens = Annotated[int, typer.Option("--max-tokens", min=1, help="Token limit of each reply.", rich_help_panel=PANEL)]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 = greedy.", rich_help_panel=PANEL)]
Seed = Annotated[
    Optional[int],
    typer.Option("--seed", help="Sampling seed sent with each request (and the command's own random choices).", rich_help_panel=PANEL),
]

BatchSize = Annotated[
    Optional[int],
    typer.Option("--batch-size", min=1, help="Sequences per forward pass (--backend local).", rich_help_panel=PANEL),
]
Adapter = Annotated[
    Optional[str],
    typer.Option("--adapter", help="LoRA adapter folder on top of --model (--backend local); --model may also be "
                 "the adapter folder itself.", rich_help_panel=PANEL),
]

#: an LLM operator's config fields shown as these shared options (same help and panel in every command)
SAMPLING_OPTIONS = {"max_tokens": MaxTokens, "temperature": Temperature, "seed": Seed}


def make_llm(
    backend: str | None,
    model: str | None,
    base_url: list[str] | None,
    concurrency: int | None,
    cache_dir: Path | None,
    no_cache: bool,
    batch: bool = False,
    **options: Any,
):
    """The backend these options describe (with the request cache unless --no-cache; batch files with --batch)."""
    from synth.llm.factory import make_backend

    if batch:
        options["batch"] = True
    return make_backend(
        backend, model, base_url, concurrency=concurrency, cache_dir=cache_dir, cache=not no_cache, **options
    )


def uses_embedded_default(backend: str | None, model: str | None, base_url: list[str] | None) -> bool:
    """Whether these options select the embedded base model (which needs few-shot prompts)."""
    from synth.llm.embedded import EMBEDDED_MODEL

    return backend in (None, "local") and not base_url and (model or EMBEDDED_MODEL) == EMBEDDED_MODEL
