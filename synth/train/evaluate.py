"""`synth eval`: held-out metrics for one model, or several side by side on the same rows.

On SFT rows (the last assistant reply is the reference):

- **exact match** and **normalised accuracy** of the greedy answer, on short-answer rows (references
  of at most `short_answer_words` words, or a multiple-choice letter). The answer is the first line of
  the reply. Normalised: lower case, punctuation and articles dropped, number words as digits; a
  multiple-choice reference ``B`` accepts a reply that starts with that letter (``B``, ``(B)``, ``B) red``).
  Also, leniently, whether the answer *contains* the normalised reference as whole words ("The answer is
  3." for ``3``): it shows what a model knows apart from the answer format.
- **answer distribution**: distinct (normalised) answers vs distinct references and the top answers with
  their shares; when the model gives at most half as many distinct answers as the references hold (and
  those hold at least 3), its answers have *collapsed* and a note with the top answers is printed.
- **mean log-likelihood per token** of the reference replies (all rows), over the tokens the chat
  template renders for the reply (its end-of-turn token included), as TRL trains them.

On preference rows: **preference accuracy** (share of pairs where the model gives the chosen reply a
higher log-likelihood than the rejected one) and the mean log-likelihood margin; for a model with an
adapter also the **DPO reward accuracy** and **margin**, with the reference being the same model with
the adapter disabled: reward = beta * (log p_model - log p_reference).

Every share and mean gets a 95% interval (Wilson for shares, a bootstrap over rows for means); with
several models, each is compared with the first on the same rows (McNemar's exact test for shares, a
paired bootstrap for means): the difference, its interval and whether it is distinguishable from zero.
See `synth.train.stats`.

Prompts are rendered with the chat template saved with the adapter (else the model's own, else synth's
default), the one training used. Results: a table, ``eval.json`` and ``eval_predictions.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.answers import (
    contains_answer,
    extract_answer,
    is_choice_letter,
    is_short_answer,
    normalize_answer,
    score_answer,
)
from synth.errors import SynthError

# ---------------------------------------------------------------- rows


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or [] if p.get("type") == "text")


@dataclass
class EvalData:
    source: str
    split: str | None
    kind: str  # "sft" | "preference"
    ids: list[str]
    prompts: list[list[dict]]
    completions: list[list[dict]]  # sft: the reference reply; preference: chosen
    rejected: list[list[dict]] = field(default_factory=list)
    images: list[list[Any]] = field(default_factory=list)

    @property
    def references(self) -> list[str]:
        return [_text(c[-1]) for c in self.completions]


def load_eval_data(source: str, split: str | None = None, limit: int | None = None) -> EvalData:
    from synth.records import dataset_kind
    from synth.train.data import check_rows, read_split

    dataset = read_split(source, split, limit)
    kind = dataset_kind(dataset)
    if kind == "other":
        raise SynthError(
            f"{source}: `synth eval` needs an SFT dataset (messages) or a preference dataset (prompt, chosen, "
            f"rejected); columns: {', '.join(dataset.column_names)}"
        )
    check_rows(dataset, "dpo" if kind == "preference" else "sft", source)
    ids = [str(i) for i in dataset["id"]] if "id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    images = [list(x or []) for x in dataset["images"]] if "images" in dataset.column_names else [[] for _ in ids]
    if kind == "preference":
        return EvalData(
            source, split, kind, ids, list(dataset["prompt"]), list(dataset["chosen"]), list(dataset["rejected"]), images
        )
    prompts, completions = [], []
    for messages in dataset["messages"]:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:last])
        completions.append([messages[last]])
    return EvalData(source, split, kind, ids, prompts, completions, [], images)


# ---------------------------------------------------------------- models


@dataclass
class ModelSpec:
    label: str
    model: str
    adapter: str | None = None
    group: str | None = None  # the --compare entry a run of `synth train --seeds` came from

    def describe(self) -> str:
        return f"{self.model} + {self.adapter}" if self.adapter else self.model


def resolve_specs(model: str, adapter: str | None, compare: list[str] | None) -> list[ModelSpec]:
    """Model specs from the CLI: MODEL [+ --adapter], or each --compare entry.

    A compare entry is ``base`` (MODEL alone), an adapter folder (MODEL + that adapter), the output of
    `synth train --seeds` (one column per seed, ``LABEL@seed-S``, summarised as mean ± sd), or any other
    model (a path or Hub id); ``LABEL=ENTRY`` names its column.
    """
    from synth.train.models import is_adapter_dir
    from synth.train.seeds import seed_runs

    if compare and adapter:
        raise SynthError("--adapter and --compare do not mix: list the adapter among the compared models instead")
    if not compare:
        label = Path(adapter).name if adapter else Path(model).name or model
        return [ModelSpec(label or model, model, adapter)]
    specs: list[ModelSpec] = []
    for entry in compare:
        label, sep, value = entry.partition("=")
        if not sep:
            label, value = "", entry
        runs = seed_runs(value) if value != "base" else None
        if runs:
            group = label or Path(value).name
            for seed, folder in runs:
                if is_adapter_dir(folder):
                    specs.append(ModelSpec(f"{group}@seed-{seed}", model, folder, group))
                else:
                    specs.append(ModelSpec(f"{group}@seed-{seed}", folder, None, group))
            continue
        if value == "base":
            spec = ModelSpec(label or "base", model, None)
        elif is_adapter_dir(value):
            spec = ModelSpec(label or Path(value).name, model, value)
        else:
            if Path(value).exists() is False and "/" not in value and value not in ("embedded", "gemma-3-270m"):
                raise SynthError(
                    f"--compare {entry}: not 'base', an adapter folder or a model folder; "
                    "pass e.g. --compare base demo/train/sft"
                )
            spec = ModelSpec(label or Path(value).name or value, value, None)
        specs.append(spec)
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.label in seen:
            seen[spec.label] += 1
            spec.label = f"{spec.label}#{seen[spec.label]}"
        else:
            seen[spec.label] = 1
    return specs


class Scorer:
    """A loaded model (with optional adapter) that generates greedy answers and scores completions."""

    def __init__(self, spec: ModelSpec, device: str = "auto", batch_size: int = 8, precision: str = "auto"):
        import torch

        from synth.train.models import (
            device_and_precision,
            inspect_model,
            load_processing,
            load_weights,
            set_chat_template,
            tokenizer_of,
        )

        self.spec = spec
        # bf16 autocast where the hardware has it (weights stay float32 on CPU): ~3x faster on such CPUs.
        self.device, self.precision = device_and_precision(device, precision)
        self.info = inspect_model(spec.model)
        self.processing = load_processing(self.info)
        set_chat_template(self.processing, None, spec.adapter)
        self.tokenizer = tokenizer_of(self.processing)
        self.vision = self.processing is not self.tokenizer
        dtype = "bfloat16" if self.device == "cuda" else "float32"
        model = load_weights(self.info, device=self.device, dtype=dtype)
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter)
        self.model = model.eval()
        self.batch_size = batch_size
        self.current_rows: list[int] = []  # the rows of the batch being scored (for error messages)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.torch = torch

    def _autocast(self):
        import contextlib

        if self.precision in ("bf16", "fp16") and self.device == "cpu":
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    # -------------------------------------------------- rendering

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processing.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _encode(self, texts: list[str], images: list[list[Any]], side: str):
        self.tokenizer.padding_side = side
        if self.vision and any(images):
            from synth.data import decode_image

            # One list of images per sample: Gemma 3, Idefics3 / SmolVLM and Mllama match images to rows by it.
            pil = [[decode_image(img) for img in row] for row in images]
            enc = self.processing(text=texts, images=pil, padding=True, return_tensors="pt", add_special_tokens=False)
        else:
            enc = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        enc.pop("labels", None)  # PaliGemma's processor adds them; the model would compute a loss on them
        return {k: v.to(self.device) for k, v in enc.items()}

    # -------------------------------------------------- generation

    def generate(self, prompts: list[list[dict]], images: list[list[Any]], max_new_tokens: int) -> list[str]:
        order = sorted(range(len(prompts)), key=lambda i: len(_flat_text(prompts[i])))
        replies: dict[int, str] = {}
        for start in range(0, len(order), self.batch_size):
            batch = self.current_rows = order[start : start + self.batch_size]
            texts = [self._render(prompts[i], True) for i in batch]
            enc = self._encode(texts, [images[i] for i in batch], "left")
            width = enc["input_ids"].shape[1]
            with self.torch.inference_mode(), self._autocast():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=self.eos_ids or None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            for i, row in zip(batch, generated[:, width:].tolist()):
                replies[i] = self.tokenizer.decode(_until_eos(row, self.eos_ids), skip_special_tokens=True)
        return [replies[i] for i in range(len(prompts))]

    # -------------------------------------------------- log-likelihood

    def completion_logprobs(
        self, prompts: list[list[dict]], completions: list[list[dict]], images: list[list[Any]], *, reference: bool = False
    ) -> list[tuple[float, int]]:
        """(sum of log-probs, token count) of each completion given its prompt; `reference`: adapter off."""
        import contextlib

        from trl.data_utils import common_prefix_length

        rows = []
        for prompt, completion in zip(prompts, completions):
            prompt_text = self._render(prompt, True)
            full_text = self._render(prompt + completion, False)
            p_ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
            f_ids = self.tokenizer(full_text, add_special_tokens=False)["input_ids"]
            rows.append((full_text, len(f_ids) - common_prefix_length(p_ids, f_ids)))
        results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        context = self.model.disable_adapter() if reference and self.spec.adapter else contextlib.nullcontext()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        with context, self.torch.inference_mode(), self._autocast():
            for start in range(0, len(order), self.batch_size):
                batch = self.current_rows = order[start : start + self.batch_size]
                enc = self._encode([rows[i][0] for i in batch], [images[i] for i in batch], "left")
                keep = max(rows[i][1] for i in batch) + 1
                logits = self.model(**enc, logits_to_keep=keep).logits.float()
                logprobs = self.torch.log_softmax(logits, dim=-1)
                ids = enc["input_ids"]
                for row, i in enumerate(batch):
                    n = rows[i][1]
                    if n == 0:
                        continue
                    targets = ids[row, -n:]
                    scores = logprobs[row, keep - n - 1 : keep - 1].gather(-1, targets[:, None]).squeeze(-1)
                    results[i] = (float(scores.sum()), n)
        return results

    def close(self) -> None:
        self.model = None


def _flat_text(messages: list[dict]) -> str:
    return "".join(_text(m) for m in messages)


def _until_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i]
    return tokens


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token, int) and token >= 0 and token != tokenizer.unk_token_id and token not in ids:
                ids.append(token)
    return ids


# ---------------------------------------------------------------- metrics


#: Per-row values of each metric, for its interval and the paired tests: a list of right/wrong (a share),
#: of values (a mean), or of (value, weight) pairs (a per-token mean: summed log-likelihood, tokens).
Samples = dict[str, list]


def sft_metrics(
    scorer: Scorer, data: EvalData, *, max_new_tokens: int, short_answer_words: int
) -> tuple[dict, list, Samples]:
    references = data.references
    short = [i for i, ref in enumerate(references) if is_short_answer(ref, short_answer_words) or is_choice_letter(ref)]
    replies = scorer.generate([data.prompts[i] for i in short], [data.images[i] for i in short], max_new_tokens)
    predictions: list[dict] = []
    exact = normalized = lenient = 0
    for i, reply in zip(short, replies):
        answer = extract_answer(reply)
        e, n = score_answer(answer, references[i])
        c = n or contains_answer(answer, references[i])
        exact, normalized, lenient = exact + e, normalized + n, lenient + c
        predictions.append({"index": i, "prediction": answer, "reply": reply, "exact": e, "correct": n, "contains": c})
    scores = scorer.completion_logprobs(data.prompts, data.completions, data.images)
    total = sum(s for s, _ in scores)
    tokens = sum(n for _, n in scores)
    metrics = {
        "rows": len(references),
        "short_answer_rows": len(short),
        "exact_match": exact / len(short) if short else None,
        "normalized_accuracy": normalized / len(short) if short else None,
        "contains_accuracy": lenient / len(short) if short else None,
        "mean_logprob_per_token": total / tokens if tokens else None,
        "reference_tokens": tokens,
        "answers": answer_distribution([p["prediction"] for p in predictions], [references[i] for i in short]),
    }
    samples: Samples = {
        "exact_match": [p["exact"] for p in predictions],
        "normalized_accuracy": [p["correct"] for p in predictions],
        "contains_accuracy": [p["contains"] for p in predictions],
        "mean_logprob_per_token": [(s, n) for s, n in scores],
    }
    return metrics, predictions, samples


#: Answers have collapsed when the model gives at most this share of the distinct reference answers ...
COLLAPSE_SHARE = 0.5
#: ... and the references hold at least this many distinct answers (fewer says nothing).
COLLAPSE_MIN_REFERENCES = 3
TOP_ANSWERS = 5


def answer_distribution(answers: list[str], references: list[str]) -> dict[str, Any] | None:
    """How varied the short answers are, compared by normalised text: distinct answers vs distinct
    references, the most frequent answers with their shares, and whether the answers collapsed (an SFT that
    answers every count question "3" or "4" can still raise exact match)."""
    from collections import Counter

    if not answers:
        return None
    counts = Counter(normalize_answer(a) for a in answers)
    distinct_references = len({normalize_answer(r) for r in references})
    return {
        "distinct_answers": len(counts),
        "distinct_references": distinct_references,
        "top": [[answer, count / len(answers)] for answer, count in counts.most_common(TOP_ANSWERS)],
        "collapsed": distinct_references >= COLLAPSE_MIN_REFERENCES
        and len(counts) <= COLLAPSE_SHARE * distinct_references,
    }


def collapse_notes(report) -> list[str]:
    """One line per model whose short answers collapsed to a few values (see `answer_distribution`)."""
    notes = []
    for spec in report.specs:
        dist = report.metrics[spec.label].get("answers")
        if dist and dist["collapsed"]:
            top = ", ".join(f"{json.dumps(answer, ensure_ascii=False)} {share:.0%}" for answer, share in dist["top"])
            notes.append(
                f"{spec.label}: answers collapsed to {dist['distinct_answers']} distinct (the references hold "
                f"{dist['distinct_references']}): {top}; check the predictions before trusting exact match"
            )
    return notes


def preference_metrics(scorer: Scorer, data: EvalData, *, beta: float) -> tuple[dict, list, Samples]:
    chosen = scorer.completion_logprobs(data.prompts, data.completions, data.images)
    rejected = scorer.completion_logprobs(data.prompts, data.rejected, data.images)
    n = len(chosen)
    margins = [c - r for (c, _), (r, _) in zip(chosen, rejected)]
    metrics: dict[str, Any] = {
        "pairs": n,
        "preference_accuracy": sum(m > 0 for m in margins) / n,
        "logprob_margin": sum(margins) / n,
    }
    rows = [{"index": i, "chosen_logprob": c, "rejected_logprob": r} for i, ((c, _), (r, _)) in enumerate(zip(chosen, rejected))]
    samples: Samples = {"preference_accuracy": [m > 0 for m in margins], "logprob_margin": margins}
    if scorer.spec.adapter:
        ref_c = scorer.completion_logprobs(data.prompts, data.completions, data.images, reference=True)
        ref_r = scorer.completion_logprobs(data.prompts, data.rejected, data.images, reference=True)
        rewards = [
            (beta * (c - rc), beta * (r - rr)) for (c, _), (r, _), (rc, _), (rr, _) in zip(chosen, rejected, ref_c, ref_r)
        ]
        metrics.update(
            reward_accuracy=sum(rc > rr for rc, rr in rewards) / n,
            reward_margin=sum(rc - rr for rc, rr in rewards) / n,
            beta=beta,
        )
        for row, (rc, rr) in zip(rows, rewards):
            row.update(chosen_reward=rc, rejected_reward=rr)
        samples["reward_accuracy"] = [rc > rr for rc, rr in rewards]
        samples["reward_margin"] = [rc - rr for rc, rr in rewards]
    return metrics, rows, samples


# ---------------------------------------------------------------- uncertainty

#: Metrics that are shares of rows (Wilson interval, McNemar's test); the others are means (bootstrap).
SHARE_METRICS = ("exact_match", "normalized_accuracy", "contains_accuracy", "preference_accuracy", "reward_accuracy")


def _split_weights(values: list) -> tuple[list[float], list[float] | None]:
    if values and isinstance(values[0], tuple):
        return [v for v, _ in values], [w for _, w in values]
    return [float(v) for v in values], None


def metric_intervals(samples: Samples) -> dict[str, list[float] | None]:
    """95% interval of every metric with per-row values (see `synth.train.stats`)."""
    from synth.train.stats import bootstrap_mean_interval, wilson_interval

    out: dict[str, list[float] | None] = {}
    for key, values in samples.items():
        if key in SHARE_METRICS:
            interval = wilson_interval(sum(bool(v) for v in values), len(values))
        else:
            interval = bootstrap_mean_interval(*_split_weights(values))
        out[key] = list(interval) if interval else None
    return out


def paired_comparisons(labels: list[str], samples: dict[str, Samples]) -> dict[str, dict[str, dict]]:
    """Each model against the first, on the same rows: {label: {metric: difference, interval, test, ...}}."""
    from synth.train.stats import compare_means, compare_shares

    first = labels[0]
    out: dict[str, dict[str, dict]] = {}
    for label in labels[1:]:
        tests: dict[str, dict] = {}
        for key, before in samples[first].items():
            after = samples[label].get(key)
            if not before or not after:
                continue
            if key in SHARE_METRICS:
                tests[key] = compare_shares(before, after)
            else:
                (a, wa), (b, wb) = _split_weights(before), _split_weights(after)
                tests[key] = compare_means(a, b, wa, wb)
        out[label] = tests
    return out


@dataclass
class EvalReport:
    data: EvalData
    specs: list[ModelSpec]
    metrics: dict[str, dict[str, Any]]
    predictions: dict[str, list[dict]]
    seconds: dict[str, float]
    samples: dict[str, Samples] = field(default_factory=dict)

    @property
    def comparisons(self) -> dict[str, dict[str, dict]]:
        """Each model against the first (empty for one model)."""
        labels = [s.label for s in self.specs]
        if len(labels) < 2 or any(label not in self.samples for label in labels):
            return {}
        return paired_comparisons(labels, self.samples)

    def as_dict(self) -> dict[str, Any]:
        from synth.train.stats import CONFIDENCE

        out = {
            "dataset": self.data.source,
            "split": self.data.split,
            "kind": self.data.kind,
            "rows": len(self.data.ids),
            "confidence": CONFIDENCE,
            "models": {
                s.label: {"model": s.model, "adapter": s.adapter, **self.metrics[s.label], "seconds": round(self.seconds[s.label], 1)}
                for s in self.specs
            },
        }
        comparisons = self.comparisons
        if comparisons:
            out["comparisons"] = {"against": self.specs[0].label, "models": comparisons}
        seeds = self.seed_groups()
        if seeds:
            out["seeds"] = seeds
        return out

    def seed_groups(self) -> dict[str, dict[str, Any]]:
        """Runs of one recipe with several seeds: {group: {"runs": labels, metric: mean, sd, values}}."""
        from synth.train.stats import mean_sd

        groups: dict[str, list[str]] = {}
        for spec in self.specs:
            if spec.group:
                groups.setdefault(spec.group, []).append(spec.label)
        keys = [key for key, _, kind in METRIC_LABELS[self.data.kind] if kind != "int"]
        return {
            group: {"runs": labels, **{k: mean_sd([self.metrics[label].get(k) for label in labels]) for k in keys}}
            for group, labels in groups.items()
        }


def evaluate(
    specs: list[ModelSpec],
    source: str,
    split: str | None = None,
    *,
    limit: int | None = None,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    beta: float = 0.1,
    short_answer_words: int = 5,
    device: str = "auto",
    precision: str = "auto",
    announce=None,
) -> EvalReport:
    """Evaluate every spec on the same rows (models load one at a time)."""
    from synth.train.runner import quiet_training

    with quiet_training():
        return _evaluate(
            specs, source, split, limit, max_new_tokens, batch_size, beta, short_answer_words, device, precision, announce
        )


def _evaluate(specs, source, split, limit, max_new_tokens, batch_size, beta, short_answer_words, device, precision, announce):
    data = load_eval_data(source, split, limit)
    metrics, predictions, seconds, samples = {}, {}, {}, {}
    for spec in specs:
        started = time.monotonic()
        if announce:
            announce(f"evaluating {spec.label} ({spec.describe()}) on {len(data.ids)} rows")
        scorer = Scorer(spec, device=device, batch_size=batch_size, precision=precision)
        try:
            if data.kind == "preference":
                result = preference_metrics(scorer, data, beta=beta)
            else:
                result = sft_metrics(scorer, data, max_new_tokens=max_new_tokens, short_answer_words=short_answer_words)
        except (ValueError, RuntimeError, TypeError, IndexError, KeyError) as e:
            # A processor or model that rejects a batch: which model, which rows, what it said.
            rows = ", ".join(str(data.ids[i]) for i in scorer.current_rows[:5])
            where = f"rows {rows}: " if rows else ""
            message = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise SynthError(
                f"eval {spec.label} ({spec.describe()}): {where}{message} "
                "(check that each row's image parts match its images)"
            ) from None
        finally:
            scorer.close()
        metrics[spec.label], predictions[spec.label], samples[spec.label] = result
        metrics[spec.label]["intervals"] = metric_intervals(samples[spec.label])
        seconds[spec.label] = time.monotonic() - started
    return EvalReport(data, specs, metrics, predictions, seconds, samples)


def write_report(report: EvalReport, out: str | Path) -> tuple[Path, Path]:
    """eval.json (metrics) and eval_predictions.jsonl (one line per row and model) beside it."""
    from synth.io import write_json, write_jsonl

    out = Path(out)
    if out.suffix != ".json":
        out = out / "eval.json"
    write_json(report.as_dict(), out)
    predictions_path = out.with_name(out.stem + "_predictions.jsonl")
    data = report.data
    references = data.references

    def rows():
        for label, items in report.predictions.items():
            for item in items:
                i = item["index"]
                yield {"model": label, "id": data.ids[i], "reference": references[i] if data.kind == "sft" else None,
                       **{k: v for k, v in item.items() if k != "index"}}

    write_jsonl(rows(), predictions_path)
    return out, predictions_path


#: eval_predictions.jsonl's per-row field of each share metric of SFT rows
PREDICTION_FIELDS = {"exact_match": "exact", "normalized_accuracy": "correct", "contains_accuracy": "contains"}


def read_predictions(path: str | Path, model: str | None = None) -> dict[str, dict]:
    """eval_predictions.jsonl's rows by id (of one model, when the file holds several)."""
    from synth.io import read_jsonl

    rows = read_jsonl(Path(path), "eval predictions")
    return {str(row["id"]): row for _, row in rows if model is None or row.get("model") == model}


def compare_prediction_files(before: str | Path, after: str | Path, metric: str = "exact_match") -> dict | None:
    """McNemar's exact test of two eval_predictions.jsonl files (two models, or two runs) on the rows both
    scored: e.g. a loop round against the model before it. None when they share no scored row."""
    from synth.train.stats import compare_shares

    key = PREDICTION_FIELDS[metric]
    first, second = read_predictions(before), read_predictions(after)
    ids = [i for i, row in first.items() if key in row and key in second.get(i, {})]
    if not ids:
        return None
    return compare_shares([bool(first[i][key]) for i in ids], [bool(second[i][key]) for i in ids])


METRIC_LABELS = {
    "sft": [
        ("exact_match", "exact match", "pct"),
        ("normalized_accuracy", "normalised accuracy", "pct"),
        ("contains_accuracy", "answer contains reference", "pct"),
        ("mean_logprob_per_token", "mean log-lik / token", "num"),
        ("short_answer_rows", "short-answer rows", "int"),
        ("rows", "rows", "int"),
    ],
    "preference": [
        ("preference_accuracy", "preference accuracy", "pct"),
        ("logprob_margin", "log-lik margin", "num"),
        ("reward_accuracy", "DPO reward accuracy", "pct"),
        ("reward_margin", "DPO reward margin", "num"),
        ("pairs", "pairs", "int"),
    ],
}


def format_value(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:,}"
    return f"{value:.4f}"


def format_interval(interval, kind: str) -> str:
    if not interval:
        return ""
    if kind == "pct":
        return f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f" [{interval[0]:.4f}, {interval[1]:.4f}]"


def format_spread(summary: dict | None, kind: str) -> str:
    """mean ± sd across seeds."""
    if not summary or kind == "int":
        return ""
    scale, unit, fmt = (100, "%", ".1f") if kind == "pct" else (1, "", ".4f")
    sd = "" if summary["sd"] is None else f" ± {format(scale * summary['sd'], fmt)}"
    return f"{format(scale * summary['mean'], fmt)}{unit}{sd}"


def format_delta(a, b, kind: str, test: dict | None = None) -> str:
    """The change against the first model; with its paired test: the interval, McNemar's p for shares, and
    "(noise)" when the change is not distinguishable from zero."""
    if a is None or b is None or kind == "int":
        return ""
    if test is None:
        return f"{100 * (b - a):+.1f} pts" if kind == "pct" else f"{b - a:+.4f}"
    low, high = test["interval"]
    if kind == "pct":
        text = f"{100 * test['difference']:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"
    else:
        text = f"{test['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"
    if "p_value" in test:
        text += f" p={test['p_value']:.2g}"
    return text if test["distinguishable"] else text + " (noise)"


def render_table(report: EvalReport):
    from rich.table import Table

    split = f" (split {report.data.split})" if report.data.split else ""
    table = Table(title=f"eval on {report.data.source}{split}: {len(report.data.ids)} {report.data.kind} rows")
    table.add_column("metric", style="bold")
    for spec in report.specs:
        table.add_column(spec.label, justify="right")
    groups = report.seed_groups()
    for group, summary in groups.items():
        table.add_column(f"{group}: mean ± sd ({len(summary['runs'])} seeds)", justify="right", style="cyan")
    first, others = report.specs[0], report.specs[1:]
    for spec in others:
        table.add_column(f"Δ {spec.label} - {first.label}", justify="right", style="green")
    comparisons = report.comparisons
    for key, name, kind in METRIC_LABELS[report.data.kind]:
        values = [report.metrics[s.label].get(key) for s in report.specs]
        if all(v is None for v in values):
            continue
        intervals = [(report.metrics[s.label].get("intervals") or {}).get(key) for s in report.specs]
        row = [name, *(format_value(v, kind) + format_interval(i, kind) for v, i in zip(values, intervals))]
        row += [format_spread(summary.get(key), kind) for summary in groups.values()]
        for spec, value in zip(others, values[1:]):
            row.append(format_delta(values[0], value, kind, comparisons.get(spec.label, {}).get(key)))
        table.add_row(*row)
    table.caption = (
        "in brackets: 95% interval (Wilson for shares, bootstrap over rows for means)"
        + ("; Δ: paired on the same rows, p = McNemar's exact test; (noise): not distinguishable from 0" if others else "")
    )
    return table


def summary_json(report: EvalReport) -> str:
    return json.dumps(report.as_dict(), indent=2)
