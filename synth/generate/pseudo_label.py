"""Pseudo-labelling: a model answers unlabeled questions, and an answer is kept only when it passes a gate.

Input: SFT records whose last turn is a user question; or labelled records with ``hide_labels: true``,
which drops the final assistant turn before asking. A hidden answer never reaches the prompt or the
output: it is only compared, in aggregate, with the kept answers (``label_check`` in the report), which
tells how good the gate's labels are without leaking a single one. Records that already end with an
answer pass through unchanged when labels are not hidden.

Each question is sampled `samples` times (one request with ``n``; temperature > 0) and the answers vote,
compared by synth's evaluation normalisation (`synth.train.evaluate`: first line, lower case,
punctuation and articles dropped, number words as digits). Gates:

- ``agreement`` (self-consistency): keep the majority answer when its share of the samples is at least
  `min_agreement` (a tie for first place is no majority);
- ``score``: an LLM judge (`synth.clean.judge`, the quality rubric) scores the majority answer 0-10; keep
  it at or above `threshold`;
- ``both``: agreement first, then the judge.

Output: the prompt plus the kept answer; ``meta.pseudo_label`` = ``{gate, samples, votes, agreement,
[score]}``, ``meta.model``, ``meta.generation``, ``meta.parent_id`` (the input record's id).
Rejects (``rejects.jsonl``): ``no_answer`` (every sample empty), ``low_agreement``, ``low_score``, and
``no_instruction`` / ``images_unsupported`` (as `generate`). Failures (``failures.jsonl``, retried by
the next run): the labelling or the judging request failed.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from synth.core.fields import FilePath
from synth.data import (
    FAILURES,
    REJECTS,
    REPORT,
    USAGE,
    OutputFolder,
    Source,
    check_output,
    open_source,
)
from synth.errors import SynthError
from synth.generate.responses import (
    FewShotExample,
    ResponseGenerator,
    ResponsesConfig,
    few_shot_examples,
    sft_records,
)
from synth.llm.base import Backend, ChatRequest, Completion
from synth.pipeline import Failed, Rejected, StageConfig, batched
from synth.pipeline.llm_task import LLMTask, failure_of
from synth.records import Message, content_id, load_meta, messages_from_arrow, messages_to_arrow

Gate = Literal["agreement", "score", "both"]


class PseudoLabelConfig(StageConfig):
    """Options of pseudo-labelling."""

    samples: int = Field(5, ge=1, description="answers sampled per question; they vote (one request with n)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature (> 0 when samples > 1)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (0-1; default: the backend's)")
    max_tokens: int = Field(64, ge=1, description="token limit of each sampled answer")
    stop: list[str] | None = Field(None, description="strings that end an answer")
    seed: int | None = Field(None, description="sampling seed sent with each request (a recipe's seed when unset)")
    system: str | None = Field(None, description="system prompt added to conversations that have none")
    few_shot: list[FewShotExample] | FilePath | None = Field(
        None, description="solved examples (instruction, response) sent before each question: a list, or a "
                          "JSONL/CSV file; default none")
    hide_labels: bool = Field(False, description="drop each record's final answer first (it is only compared, in "
                                                 "aggregate, with the kept answers: label_check in the report)")
    gate: Gate = Field("agreement", description="what keeps an answer: agreement (self-consistency), score "
                                                "(an LLM judge) or both (agreement first)")
    min_agreement: float = Field(0.6, gt=0, le=1, description="agreement gate: the majority's share of the samples "
                                                              "needed")
    extract: Literal["line", "full"] = Field(
        "line", description="what the samples vote on: line, the reply's first line (short answers); full, the "
                           "whole reply"
    )
    threshold: float = Field(6.0, ge=0, le=10, description="score gate: keep judge scores at or above this")
    judge_backend: str | None = Field(
        None, description="score gate: the judge; in a recipe a name under `backends:`, on the command line a "
                          "model of the same backend and server (default: the labelling model)")
    judge_template: FilePath | None = Field(
        None, description="score gate: the rubric, a template name or file (default: the quality rubric)")
    judge_max_tokens: int = Field(256, ge=8, description="score gate: token limit of each judge reply")

    @model_validator(mode="after")
    def _sampled(self) -> PseudoLabelConfig:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("greedy samples are all the same answer: set temperature > 0 (e.g. 0.7) or samples: 1")
        if self.gate in ("agreement", "both") and self.samples == 1:
            # one sample always agrees with itself: the gate would keep everything
            raise ValueError("the agreement gate needs samples >= 2 (e.g. 5); with one sample use gate: score")
        return self


def answer_of(text: str, extract: str = "line") -> str:
    """The answer in one sampled reply: its first line (the evaluation's extraction) or the whole reply."""
    from synth.answers import extract_answer

    return extract_answer(text) if extract == "line" else text.strip()


def vote_key(answer: str) -> str:
    """What answers are compared by: synth's evaluation normalisation ("Three." and "3" agree)."""
    from synth.answers import normalize_answer

    return normalize_answer(answer)


@dataclass
class Vote:
    """The outcome of one question's samples."""

    answer: str | None  # the majority answer as the model wrote it (its most common form)
    key: str | None
    agreement: float  # the majority's share of all samples (empty ones count against it)
    votes: dict[str, int]
    tie: bool = False


def vote(texts: list[str], finish_reasons: list[str], extract: str = "line") -> Vote:
    """Majority vote over sampled replies. An empty answer, or a full reply cut at max_tokens, is no vote."""
    keys: list[tuple[str, str]] = []
    for index, text in enumerate(texts):
        cut = index < len(finish_reasons) and finish_reasons[index] == "length"
        answer = answer_of(text, extract)
        key = vote_key(answer)
        if key and not (cut and extract == "full"):
            keys.append((key, answer))
    counts = Counter(k for k, _ in keys)
    if not counts:
        return Vote(None, None, 0.0, {})
    ranked = counts.most_common()
    key, top = ranked[0]
    forms = Counter(a for k, a in keys if k == key)
    return Vote(forms.most_common(1)[0][0], key, top / max(1, len(texts)), dict(ranked),
                tie=len(ranked) > 1 and ranked[1][1] == top)


@dataclass
class LabelCheck:
    """Kept answers against hidden labels (counts only: no hidden label is ever written)."""

    majority: int = 0  # questions with a hidden label and a majority answer
    majority_correct: int = 0
    kept: int = 0
    kept_correct: int = 0

    def add(self, answer: str, hidden: str, kept: bool) -> None:
        from synth.answers import score_answer

        correct = score_answer(answer, answer_of(hidden))[1]
        self.majority += 1
        self.majority_correct += correct
        if kept:
            self.kept += 1
            self.kept_correct += correct

    def as_dict(self) -> dict[str, Any]:
        def share(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {"kept": self.kept, "kept_correct": self.kept_correct, "kept_accuracy": share(self.kept_correct, self.kept),
                "majority": self.majority, "majority_correct": self.majority_correct,
                "majority_accuracy": share(self.majority_correct, self.majority)}


class PseudoLabeler(LLMTask):
    """Answer unlabeled questions several times; keep the majority answer only when the samples agree (or a
    judge scores it well).

    Reads SFT records whose last turn is a question (or answered ones with hide_labels); writes the question
    plus the gated majority answer, with the votes in meta.pseudo_label. The report has the kept share of
    the questions asked and, with hidden labels, how many kept answers match them (label_check).
    """

    name: ClassVar[str] = "pseudo_label"
    Config = PseudoLabelConfig
    reads: ClassVar[tuple[str, ...]] = ("messages", "images", "id", "meta")
    writes: ClassVar[tuple[str, ...]] = ("messages", "id", "meta")
    output_kind: ClassVar[str] = "sft"
    cli_flags: ClassVar[dict[str, list[str]]] = {"judge_backend": ["--judge-model"]}

    def __init__(self, backend: Backend, config=None, progress=None, *, judge_backend: Backend | None = None,
                 **overrides):
        super().__init__(backend, config, progress, **overrides)
        cfg: PseudoLabelConfig = self.config
        self.few_shot = few_shot_examples(cfg.few_shot or [], backend)  # default none, whatever the model
        # The request is generate's (system prompt, few-shot, images check); `regenerate` drops a final answer.
        self.responder = ResponseGenerator(backend, ResponsesConfig(
            system=cfg.system, regenerate=True, n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
            max_tokens=cfg.max_tokens, stop=cfg.stop, seed=cfg.seed, keep_truncated=True, few_shot=self.few_shot))
        self.judge = None
        if cfg.gate in ("score", "both"):
            from synth.clean.judge import JudgeConfig, JudgeFilter

            self.judge = JudgeFilter(judge_backend or backend, JudgeConfig(
                aspect="quality", threshold=cfg.threshold, template=cfg.judge_template,
                max_tokens=cfg.judge_max_tokens))
        self.label_check = LabelCheck()
        self.passed = 0  # answered records passed through unchanged
        self._majority: dict[int, str] = {}  # id(record) → its majority answer, within one batch

    @classmethod
    def from_config(cls, config: PseudoLabelConfig, *, backend_factory=None) -> PseudoLabeler:
        """The labeller on the stage's backend; the score gate's judge on `judge_backend` when it names one."""
        if backend_factory is None:
            raise SynthError("'pseudo_label' needs an LLM backend; pass --backend/--model (or a backend in the recipe)")
        judged = config.judge_backend and config.gate != "agreement"
        return cls(backend_factory(), config, judge_backend=backend_factory(config.judge_backend) if judged else None)

    @staticmethod
    def backend_refs(config: PseudoLabelConfig) -> list[tuple[tuple, str]]:
        """The judge's backend, when it is another one."""
        return [(("judge_backend",), config.judge_backend)] if config.judge_backend else []

    @staticmethod
    def input_records(source: Source) -> Iterator[dict]:
        return sft_records(source)

    # ------------------------------------------------ what a run reports

    def details(self) -> dict[str, Any]:
        """The report's figures: counts, the kept share of the questions asked, the gate, the label check."""
        details = stage_report(self)
        details.pop("config", None)
        return details

    @classmethod
    def merged_details(cls, details: dict[str, Any]) -> dict[str, Any]:
        """Shares of the whole stage, from the counts summed over its shards."""
        details["kept_share"] = _share(details.get("kept"), details.get("asked"))
        check = details.get("label_check")
        if isinstance(check, dict):
            check["kept_accuracy"] = _share(check.get("kept_correct"), check.get("kept"))
            check["majority_accuracy"] = _share(check.get("majority_correct"), check.get("majority"))
        return details

    def describe(self) -> str:
        """The kept share (and, with hidden labels, how many kept answers match them), after a CLI run."""
        report = self.details()
        share = f" ({report['kept_share']:.0%} of {report['asked']:,} asked)" if report["kept_share"] is not None else ""
        line = f"kept {report['kept']:,} pseudo-labels{share}"
        check = report.get("label_check")
        if check and check["kept"]:
            line += (f"\nagainst the hidden labels: kept {check['kept_accuracy']:.0%} correct; all majority answers "
                     f"{check['majority_accuracy']:.0%}")
        return line

    def nothing_kept(self) -> str:
        """The error when no question got a kept answer, and what to change."""
        from synth.generate.responses import _reasons

        return (f"no question got a kept pseudo-label ({_reasons(self.stats.dropped)}); lower min_agreement (or "
                "threshold), raise samples, or check the model's answers in a dry run")

    def preview_requests(self, records: list[dict]) -> list[ChatRequest | Rejected]:
        """The requests a dry run shows (records that pass through ask nothing)."""
        return [self.format_input(r) for r in records if not self.passes_through(r)]

    # ------------------------------------------------ requests

    def passes_through(self, record: dict) -> bool:
        messages = record.get("messages") or []
        return not self.config.hide_labels and bool(messages) and messages[-1].get("role") == "assistant"

    def format_input(self, record: dict) -> ChatRequest | Rejected:
        return self.responder.format_input(record)

    @staticmethod
    def hidden_label(record: dict) -> str | None:
        messages = record.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            return messages_from_arrow([messages[-1]])[0].text
        return None

    # ------------------------------------------------ answers

    def format_output(self, record: dict, completion: Completion) -> dict | Rejected:
        """The labelled record from the samples' majority, or why there is none (agreement gate applied)."""
        cfg: PseudoLabelConfig = self.config
        result = vote(completion.texts, completion.finish_reasons, cfg.extract)
        if result.answer is None:
            return Rejected("no_answer", f"all {len(completion.texts)} samples were empty")
        self._majority[id(record)] = result.answer
        passes = result.agreement >= cfg.min_agreement and not result.tie
        if cfg.gate in ("agreement", "both") and not passes:
            votes = ", ".join(f"{k!r}: {n}" for k, n in result.votes.items())
            why = "a tie for first place" if result.tie else f"{result.agreement:.2f} < {cfg.min_agreement:g}"
            return Rejected("low_agreement", f"{why} ({votes} of {len(completion.texts)} samples)")
        return self._labelled(record, result)

    def _labelled(self, record: dict, result: Vote) -> dict:
        cfg: PseudoLabelConfig = self.config
        messages = messages_from_arrow(record.get("messages") or [])
        if messages and messages[-1].role == "assistant":
            messages = messages[:-1]
        if cfg.system and messages and messages[0].role != "system":
            messages = [Message(role="system", content=cfg.system), *messages]
        conversation = [*messages, Message(role="assistant", content=result.answer)]
        images = list(record.get("images") or [])
        parts_form = bool(images) or any(not isinstance(m.get("content"), str) for m in record.get("messages") or [])
        meta = {
            **load_meta(record.get("meta")),
            "model": self.backend.model_name,
            "generation": {k: v for k, v in {"temperature": cfg.temperature, "top_p": cfg.top_p,
                                             "max_tokens": cfg.max_tokens, "n": cfg.samples, "seed": cfg.seed,
                                             "few_shot": len(self.few_shot) or None}.items() if v is not None},
            "pseudo_label": {"gate": cfg.gate, "samples": cfg.samples, "votes": result.votes,
                             "agreement": round(result.agreement, 4)},
            "parent_id": record.get("id"),
        }
        row = {"messages": messages_to_arrow(conversation, parts_form), "id": content_id(conversation, images),
               "meta": meta}
        if parts_form:
            row["images"] = images
        return row

    # ------------------------------------------------ the batch

    def run_batch(self, batch: list[dict]) -> Iterator[dict]:
        plan: list[tuple[dict, Any]] = []
        requests: list[ChatRequest] = []
        for record in batch:
            if self.passes_through(record):
                plan.append((record, "pass"))
                continue
            request = self.format_input(record)
            if isinstance(request, Rejected):
                plan.append((record, request))
                continue
            plan.append((record, len(requests)))
            requests.append(request)
        completions = self.backend.complete(requests, progress=self.progress) if requests else []
        outcomes: list[Any] = []
        for record, step in plan:
            if isinstance(step, int):
                completion = completions[step]
                outcome = self.format_output(record, completion) if completion.ok else failure_of(completion)
                self.answered += not isinstance(outcome, Failed)
                outcomes.append(outcome)
            else:
                outcomes.append(step)
        if self.judge is not None:
            outcomes = self._judged(outcomes)
        for (record, _), outcome in zip(plan, outcomes, strict=True):
            if outcome == "pass":
                self.passed += 1
                outcome = record
            majority = self._majority.pop(id(record), None)
            if self.config.hide_labels and majority is not None and self.hidden_label(record) is not None:
                self.label_check.add(majority, self.hidden_label(record), kept=isinstance(outcome, dict))
            yield from self.account(record, outcome)

    def _judged(self, outcomes: list[Any]) -> list[Any]:
        """Score gate: the judge scores each labelled record; low scores become `low_score` rejects."""
        judge = self.judge
        todo = [i for i, o in enumerate(outcomes) if isinstance(o, dict)]
        requests = [judge.format_input(outcomes[i]) for i in todo]
        completions = judge.backend.complete(requests, progress=self.progress) if requests else []
        for i, completion in zip(todo, completions, strict=True):
            if not completion.ok:
                outcomes[i] = failure_of(completion)
                continue
            verdict = judge.format_output(outcomes[i], completion)
            if isinstance(verdict, dict):
                meta = verdict["meta"]
                meta["pseudo_label"] = {**meta["pseudo_label"], "score": meta["scores"]["quality"]}
            outcomes[i] = verdict
        return outcomes


# ---------------------------------------------------------------- datasets


@dataclass
class PseudoLabelResult:
    out: Path
    written: int
    report: dict[str, Any]
    rejects: Path | None
    failures: Path | None
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def stage_report(stage: PseudoLabeler) -> dict[str, Any]:
    """What ``report.json`` says: counts, the kept share of the questions asked, the gate, the label check."""
    stats = stage.stats
    asked = stats.seen - stage.passed
    labelled = stats.kept - stage.passed
    report: dict[str, Any] = {
        "inputs": stats.seen,
        "asked": asked,
        "kept": labelled,
        "kept_share": round(labelled / asked, 4) if asked else None,
        "passed_through": stage.passed,
        "rejected": dict(stats.dropped),
        "failed": dict(stats.failed),
        "gate": stage.config.gate,
        "config": stage.config.model_dump(exclude={"few_shot"}) | {"few_shot": len(stage.few_shot)},
    }
    if stage.config.hide_labels:
        report["label_check"] = stage.label_check.as_dict()
    return report


def pseudo_label(
    source: str | os.PathLike | Source,
    out: str | os.PathLike,
    backend: Backend,
    config: PseudoLabelConfig | None = None,
    *,
    judge_backend: Backend | None = None,
    split: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    console=None,
) -> PseudoLabelResult:
    """Read `source`, pseudo-label it and write the SFT dataset to `out` (streaming) with ``report.json``,
    ``usage.json``, ``rejects.jsonl`` and ``failures.jsonl`` inside; the folder appears whole or not at all.
    Every request failing, or no question getting a kept answer, is an error."""
    from synth.generate.responses import write_answered
    from synth.llm.factory import report_usage

    config = config or PseudoLabelConfig()
    out = check_output(out, overwrite, inputs=[source])
    src = source if isinstance(source, Source) else open_source(source, split, limit=limit)
    started = time.monotonic()
    stage = PseudoLabeler(backend, config, judge_backend=judge_backend)
    with OutputFolder(out, overwrite) as folder:
        written = write_answered(stage, src, folder, backend, show_progress)
        if not written:
            raise SynthError(f"{src.name}: {stage.nothing_kept()}")
        seconds = time.monotonic() - started
        usage = report_usage(backend, console=console)
        report = {"command": "pseudo-label", "source": src.name, "model": backend.model_name, **stage_report(stage),
                  "seconds": round(seconds, 3)}
        if judge_backend is not None and judge_backend is not backend:
            report["judge_model"] = judge_backend.model_name
            usage = {"labeller": usage, "judge": report_usage(judge_backend, console=console, title="judge usage")}
        folder.write_json(REPORT, report)
        folder.write_json(USAGE, usage)
    return PseudoLabelResult(out=out, written=written, report=report,
                             rejects=out / REJECTS if (out / REJECTS).exists() else None,
                             failures=out / FAILURES if (out / FAILURES).exists() else None,
                             seconds=seconds, stats=stage.stats.as_dict())


def compare_labels(pseudo: str | os.PathLike, reference: str | os.PathLike) -> dict[str, Any]:
    """Accuracy of pseudo-labels against a labelled copy of the same questions: each pseudo-labelled
    record's ``meta.parent_id`` is looked up among the reference's ids (a stage output, a file, a Hub id),
    and its last answer scored against the reference's, as `synth eval` scores a reply (normalised match)."""
    from synth.answers import score_answer

    answers = {}
    for record in _sft(reference).records():
        text = PseudoLabeler.hidden_label(record)
        if text is not None and record.get("id"):
            answers[str(record["id"])] = text
    compared = correct = missing = 0
    for record in _sft(pseudo).records():
        parent = load_meta(record.get("meta")).get("parent_id")
        if parent is None or str(parent) not in answers:
            missing += 1
            continue
        compared += 1
        correct += score_answer(answer_of(PseudoLabeler.hidden_label(record) or ""), answer_of(answers[str(parent)]))[1]
    return {"compared": compared, "correct": correct, "accuracy": round(correct / compared, 4) if compared else None,
            "unmatched": missing}


def _sft(path: str | os.PathLike) -> Source:
    source = open_source(path)
    if source.kind != "sft":
        raise SynthError(f"{path}: expected an SFT dataset (messages), found {source.kind} columns")
    return source


def label_records(records: Iterable[dict], backend: Backend, config: PseudoLabelConfig | dict | None = None,
                  judge_backend: Backend | None = None) -> tuple[list[dict], PseudoLabeler]:
    """In memory, for notebooks and tests: the kept records and the stage (its stats and label check)."""
    stage = PseudoLabeler(backend, config, judge_backend=judge_backend)
    kept = [r for batch in batched(records, stage.batch_size) for r in stage.run_batch(batch)]
    return kept, stage


def _share(part: Any, whole: Any) -> float | None:
    return round(part / whole, 4) if isinstance(part, int) and isinstance(whole, int) and whole else None


OPERATOR_CLASSES = (PseudoLabeler,)
