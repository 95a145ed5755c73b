"""Command: prefs (preference pairs for DPO; see synth/prefs)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

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
    NoCache,
    Out,
    Seed,
    make_llm,
    uses_embedded_default,
)
from synth.errors import SynthError

JUDGE_PANEL = "Judge options (judge, pairwise, claims)"
PAIR_PANEL = "Pairs"

# -m and --temperature repeat here: several models and temperatures give varied candidates.
Models = Annotated[
    Optional[list[str]],
    typer.Option(
        "--model", "-m",
        help="Model that answers (judge, pairwise, claims: repeat for several; the n responses are spread over "
        "models x temperatures) or rewrites (hallucinate). A name the server at --base-url serves, or a Hub id / "
        "folder for --backend local (default: the embedded Gemma 3 270M).",
        rich_help_panel=PANEL,
    ),
]
Temperatures = Annotated[
    Optional[list[float]],
    typer.Option("--temperature", min=0.0, help="Sampling temperature; repeat for several (default 0.7; 0 = greedy).",
                 rich_help_panel=PANEL),
]

STRATEGY_NAMES = ("judge", "pairwise", "claims", "hallucinate", "perturb")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@command("prefs")
def prefs(
    dataset: str = typer.Argument(..., help="SFT dataset (messages [+ images]) or raw rows with qa / caption columns (the demo shapes data)."),
    strategy: str = typer.Option(..., "--strategy", "-s", help="judge | pairwise | claims | hallucinate | perturb"),
    out: Out = ...,
    model: Models = None,
    base_url: BaseUrl = None,
    backend: BackendName = None,
    concurrency: Concurrency = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch: Batch = False,
    max_tokens: MaxTokens = 512,
    temperature: Temperatures = None,
    seed: Seed = None,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Sequences per forward pass (local backend).", rich_help_panel=PANEL),
    n: int = typer.Option(4, "--n", min=2, help="Responses sampled per prompt (judge, pairwise, claims)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt for conversations without one (sampling)."),
    include_reference: bool = typer.Option(False, "--include-reference", help="The dataset's own answer joins the candidates."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep responses cut at --max-tokens."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model (default: the first --model, on the same backend).", rich_help_panel=JUDGE_PANEL),
    judge_base_url: Optional[list[str]] = typer.Option(None, "--judge-base-url", help="Judge server URL (default: --base-url).", rich_help_panel=JUDGE_PANEL),
    judge_backend: Optional[str] = typer.Option(None, "--judge-backend", help="Judge backend: openai | local (default: --backend).", rich_help_panel=JUDGE_PANEL),
    judge_max_tokens: int = typer.Option(512, "--judge-max-tokens", min=8, help="Token limit of each judge reply.", rich_help_panel=JUDGE_PANEL),
    judge_temperature: float = typer.Option(
        0.0, "--judge-temperature", min=0.0, help="Sampling temperature of the judge requests; 0 = greedy.",
        rich_help_panel=JUDGE_PANEL,
    ),
    max_claims: int = typer.Option(8, "--max-claims", min=1, max=50, help="claims: claims checked per response.", rich_help_panel=JUDGE_PANEL),
    pairing: str = typer.Option("best-worst", "--pairing", help="best-worst: one pair per prompt; gap: every pair at least --min-gap apart.", rich_help_panel=PAIR_PANEL),
    min_gap: float = typer.Option(1.0, "--min-gap", min=0.001, help="Smallest rating gap between chosen and rejected (judge, claims).", rich_help_panel=PAIR_PANEL),
    pairs_per_prompt: int = typer.Option(2, "--pairs-per-prompt", min=1, help="Most pairs per prompt (--pairing gap).", rich_help_panel=PAIR_PANEL),
    max_length_ratio: Optional[float] = typer.Option(None, "--max-length-ratio", min=1.0, help="Drop pairs whose longer reply is more than this many times the shorter.", rich_help_panel=PAIR_PANEL),
    error_types: Optional[str] = typer.Option(None, "--error-types", help="hallucinate: comma list of object, attribute, count, relation (default all)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="perturb: comma list of yesno, number, color, size, position, object (default all)."),
    scenes: Optional[str] = typer.Option(None, "--scenes", help="Dataset with captions/objects by id (e.g. demo/shapes): images as text for text-only models, objects for perturb."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to read when the source has several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Build a preference (DPO) dataset: pairs of a chosen and a rejected reply per prompt."""
    from synth.data import check_output
    from synth.prefs import build_preferences

    if strategy not in STRATEGY_NAMES:
        raise SynthError(f"unknown strategy '{strategy}'; choose one of: {', '.join(STRATEGY_NAMES)}")
    if pairing not in ("best-worst", "gap"):
        raise SynthError(f"unknown --pairing '{pairing}'; choose best-worst or gap")
    check_output(out, overwrite)  # before loading any model
    backends: list[Any] = []
    try:
        stage = _make_stage(
            strategy, backends, model=model, base_url=base_url, backend=backend, concurrency=concurrency,
            cache_dir=cache_dir, no_cache=no_cache, batch=batch, batch_size=batch_size, max_tokens=max_tokens,
            temperatures=temperature, seed=seed or 0, n=n, system=system, include_reference=include_reference,
            keep_truncated=keep_truncated, judge_model=judge_model, judge_base_url=judge_base_url,
            judge_backend=judge_backend, judge_max_tokens=judge_max_tokens, judge_temperature=judge_temperature,
            max_claims=max_claims, pairing=pairing, min_gap=min_gap, pairs_per_prompt=pairs_per_prompt,
            error_types=_csv(error_types), kinds=_csv(kinds), scenes=scenes, split=split,
        )
        result = build_preferences(
            dataset, out, stage, split=split, limit=limit, overwrite=overwrite,
            max_length_ratio=max_length_ratio, console=console,
        )
    finally:
        for llm in backends:
            llm.close()
    report = result.report
    dropped = report["dropped"]
    failed = report["failed"]
    console.print(
        f"wrote {result.pairs:,} pairs ({strategy}) from {report['prompts']:,} prompts to {result.out} "
        f"in {result.seconds:.1f} s"
    )
    if dropped:
        console.print(f"  dropped: {', '.join(f'{k}: {v:,}' for k, v in sorted(dropped.items()))} → {result.rejects}")
    if failed:
        console.print(
            f"  [yellow]failed: {', '.join(f'{k}: {v:,}' for k, v in sorted(failed.items()))} → {result.failures} "
            "(rerun the same command to retry them)[/yellow]"
        )


def _config(cls, **fields: Any):
    from pydantic import ValidationError

    from synth.errors import validation_message

    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        raise SynthError(validation_message(e, "prefs options")) from e


def _make_stage(strategy: str, backends: list, **o: Any):
    """The strategy stage the options describe; every backend it opens is appended to `backends`."""
    from synth.prefs import (
        ClaimsConfig,
        ClaimsStrategy,
        HallucinateConfig,
        HallucinateStrategy,
        JudgeConfig,
        JudgeStrategy,
        PairwiseConfig,
        PairwiseStrategy,
        PerturbConfig,
        PerturbStrategy,
        Sampler,
        SceneIndex,
    )

    scenes = SceneIndex.from_source(o["scenes"]) if o["scenes"] else None
    if strategy == "perturb":
        return PerturbStrategy(_config(PerturbConfig, seed=o["seed"], kinds=o["kinds"]), scenes=scenes)

    options = {"batch_size": o["batch_size"]} if o["batch_size"] else {}

    def open_backend(kind, name, urls):
        llm = make_llm(kind, name, urls, o["concurrency"], o["cache_dir"], o["no_cache"], o["batch"], **options)
        backends.append(llm)
        return llm

    models = o["model"] or [None]
    temperatures = o["temperatures"] or [0.7]
    answerers = [open_backend(o["backend"], name, o["base_url"]) for name in models]
    if strategy == "hallucinate":
        if len(answerers) > 1 or len(temperatures) > 1:
            raise SynthError("hallucinate rewrites with one model at one temperature; pass -m and --temperature once")
        config = _config(HallucinateConfig, seed=o["seed"], temperature=temperatures[0], max_tokens=o["max_tokens"],
                         error_types=o["error_types"])
        return HallucinateStrategy(answerers[0], config, scenes=scenes)

    samplers = []
    for name, llm in zip(models, answerers):
        shots = _few_shot() if uses_embedded_default(o["backend"], name, o["base_url"]) else []
        samplers += [Sampler(llm, t, shots) for t in temperatures]
    if o["judge_model"] or o["judge_base_url"] or o["judge_backend"]:
        judge = open_backend(o["judge_backend"] or o["backend"], o["judge_model"] or models[0], o["judge_base_url"] or o["base_url"])
    else:
        judge = answerers[0]
    common = dict(
        seed=o["seed"], n=o["n"], max_tokens=o["max_tokens"], system=o["system"], include_reference=o["include_reference"],
        keep_truncated=o["keep_truncated"], judge_max_tokens=o["judge_max_tokens"], judge_temperature=o["judge_temperature"],
        pairing=o["pairing"], pairs_per_prompt=o["pairs_per_prompt"],
    )
    if strategy == "judge":
        return JudgeStrategy(samplers, judge, _config(JudgeConfig, min_gap=o["min_gap"], **common), scenes=scenes)
    if strategy == "pairwise":
        return PairwiseStrategy(samplers, judge, _config(PairwiseConfig, **common), scenes=scenes)
    return ClaimsStrategy(samplers, judge, _config(ClaimsConfig, min_gap=o["min_gap"], max_claims=o["max_claims"], **common), scenes=scenes)


def _few_shot() -> list[tuple[str, str]]:
    """The shipped solved examples: the embedded default is a base model and answers best after them."""
    from synth.generate.responses import default_few_shot

    return [(e.instruction, e.response) for e in default_few_shot()]
