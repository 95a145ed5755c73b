"""The dataset card (README.md): YAML metadata through `huggingface_hub.DatasetCardData`, the text from the
jinja template ``templates/cards/dataset_card.md.jinja``, facts from each config's `Lineage`.

The card says how each config was made (steps with counts and drop reasons, templates, models, sampling
settings, tokens), shows a few rows, gives the `load_dataset` lines, and cites the papers of the methods the
data went through, and only those.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from synth.publish.lineage import Lineage, Stage, meta_column, pick_rows

SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
)
CLIP_CHARS = 600  # per message in the card's sample rows
SAMPLE_ROWS = 3


@dataclass
class HubConfig:
    """One config of the Hub dataset: a name and the dataset folder it is made from."""

    name: str
    lineage: Lineage

    @property
    def kind(self) -> str:
        return self.lineage.kind

    @property
    def data_dir(self) -> str:
        # datasets' push_to_hub puts a non-default config's shards under a folder named after it
        return self.name


@functools.lru_cache(maxsize=1)
def method_catalog() -> dict[str, Any]:
    from synth.io import read_yaml
    from synth.paths import templates_dir

    return read_yaml(templates_dir() / "cards" / "methods.yaml", "method catalog")


def method_info(method: str) -> dict[str, Any]:
    known = method_catalog()["methods"].get(method)
    if known:
        return {"name": method, **known}
    label = method.split(":", 1)[-1]
    return {"name": method, "label": label, "tag": re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-"), "what": ""}


def size_category(rows: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def task_categories(configs: list[HubConfig]) -> list[str]:
    cats = []
    for config in configs:
        cat = "image-text-to-text" if config.lineage.multimodal else "text-generation"
        if cat not in cats:
            cats.append(cat)
    return cats


def card_tags(configs: list[HubConfig]) -> list[str]:
    tags = ["synthetic", "synth"]
    kinds = {c.kind for c in configs}
    if "sft" in kinds:
        tags += ["sft", "instruction-tuning"]
    if "preference" in kinds:
        tags += ["dpo", "preference"]
    if any(c.lineage.multimodal for c in configs):
        tags.append("multimodal")
    for config in configs:
        for method in config.lineage.all_methods():
            tag = method_info(method).get("tag")
            if tag and tag not in tags:
                tags.append(tag)
    return tags


def citations(configs: list[HubConfig]) -> list[dict[str, str]]:
    """One entry per paper (title, bibtex, the methods it is cited for), in the order the methods appear."""
    catalog = method_catalog()
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        for method in config.lineage.all_methods():
            info = method_info(method)
            for key in info.get("cite") or []:
                bibtex = catalog["citations"][key]
                title = re.search(r"title\s*=\s*\{(.*)\},?\s*$", bibtex, re.MULTILINE)
                entry = out.setdefault(key, {"key": key, "bibtex": bibtex, "title": title.group(1) if title else key, "for": []})
                if info["label"] not in entry["for"]:
                    entry["for"].append(info["label"])
    return [{**e, "methods": ", ".join(e["for"])} for e in out.values()]


# ---------------------------------------------------------------- text helpers


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        text = content
    else:
        text = "".join("<image>" if p.get("type") == "image" else (p.get("text") or "") for p in content or [])
    return text if len(text) <= CLIP_CHARS else text[:CLIP_CHARS] + f"… (+{len(text) - CLIP_CHARS} chars)"


def _turns(messages: list[dict] | None) -> str:
    return "\n".join(f"{m.get('role', '?')}: {_message_text(m)}" for m in messages or [])


def fence(text: str, info: str = "text") -> str:
    """A Markdown code block that no content can break out of (the fence is longer than any backtick run)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def md_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: no pipes, no newlines, no raw HTML."""
    text = str(value)
    for old, new in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\n", " ")):
        text = text.replace(old, new)
    return text


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _reasons(counts: dict[str, int]) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:,}" for k, v in items if v) or "-"


def _setting_text(settings: dict[str, Any]) -> str:
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict):  # weights: list the names, the numbers only when they differ
            if len(set(value.values())) == 1:
                value = ", ".join(value) + (" (equal weights)" if len(value) > 1 else "")
            else:
                value = ", ".join(f"{k}={v:g}" for k, v in value.items())
            parts.append(f"{key}: {value}")
        else:
            parts.append(f"{key}={value}")
    return "; ".join(parts)


def stage_rows(stages: list[Stage]) -> list[dict[str, str]]:
    return [
        {
            "name": md_cell(s.name),
            "seen": _number(s.seen),
            "kept": _number(s.kept),
            "dropped": md_cell(_reasons(s.dropped)),
            "notes": md_cell("; ".join(s.notes + ([f"failed {_reasons(s.failed)} (retried next run)"] if s.failed else [])) or "-"),
        }
        for s in stages
    ]


def sample_rows(lineage: Lineage, count: int = SAMPLE_ROWS) -> list[dict[str, str]]:
    """A few rows of the first split, one per source where there are several, as text (images as ``<image>``)."""
    split, dataset = next(iter(lineage.splits.items()))
    columns = [c for c in dataset.column_names if c != "images"]
    positions = pick_rows(meta_column(dataset, 10_000), count)
    rows = []
    for row in dataset.select_columns(columns).select(positions):
        meta = row.get("meta")
        meta_text = json.dumps(json.loads(meta), ensure_ascii=False, sort_keys=True) if isinstance(meta, str) and meta else ""
        if lineage.kind == "preference":
            body = (f"--- prompt\n{_turns(row['prompt'])}\n--- chosen\n{_turns(row['chosen'])}"
                    f"\n--- rejected\n{_turns(row['rejected'])}")
        elif lineage.kind == "sft":
            body = _turns(row["messages"])
        else:
            body = "\n".join(f"{k}: {str(v)[:CLIP_CHARS]}" for k, v in row.items() if k != "meta")
        if len(meta_text) > CLIP_CHARS:
            meta_text = meta_text[:CLIP_CHARS] + "…"
        rows.append({"id": str(row.get("id") or ""), "split": split, "body": fence(body), "meta": fence(meta_text, "json") if meta_text else ""})
    return rows


def _counter_text(counter: Counter | dict | None, limit: int = 12) -> str:
    if not counter:
        return ""
    items = Counter(counter).most_common()
    text = ", ".join(f"{md_cell(k)} ({v:,})" for k, v in items[:limit])
    return text + (f", … {len(items) - limit} more" if len(items) > limit else "")


def config_context(config: HubConfig, repo_id: str) -> dict[str, Any]:
    lineage = config.lineage
    stages = lineage.all_stages()
    tokens = lineage.tokens()
    meta = lineage.meta
    methods = [method_info(m) for m in lineage.all_methods()]
    return {
        "name": config.name,
        "kind": lineage.kind,
        "kind_label": {"sft": "SFT conversations", "preference": "preference pairs"}.get(lineage.kind, "records"),
        "multimodal": lineage.multimodal,
        "rows": lineage.rows,
        "splits": [{"name": k, "rows": len(v)} for k, v in lineage.splits.items()],
        "columns": list(lineage.features),
        "methods": methods,
        "stages": stage_rows(stages),
        "settings": [{"name": md_cell(s.name), "text": md_cell(_setting_text(s.settings))} for s in stages if s.settings],
        "models": [md_cell(m) for m in lineage.models()],
        "tokens": tokens if tokens["requests"] or tokens["prompt_tokens"] else None,
        "sources": _counter_text(meta.get("source")),
        "templates": _counter_text(meta.get("template")),
        "operators": _counter_text(meta.get("operator")),
        "strategies": _counter_text(meta.get("strategy")),
        "meta_keys": [md_cell(k) for k, _ in lineage.meta_keys.most_common()],
        "rejects": sum(len(n.rejects) for n in lineage.walk()),
        "failures": sum(len(n.failures) for n in lineage.walk()),
        "samples": sample_rows(lineage),
        "load": f'load_dataset("{repo_id}", "{config.name}")',
    }


# ---------------------------------------------------------------- the card


def card_data(configs: list[HubConfig], license: str, language: list[str], pretty_name: str,
              infos: dict[str, Any] | None = None):
    """The YAML block: Hub metadata, the `configs` list (first config is the default) and, when the
    shards are known, `dataset_info` as `datasets`' own push_to_hub writes it."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license=license,
        language=language,
        pretty_name=pretty_name,
        task_categories=task_categories(configs),
        tags=card_tags(configs),
        size_categories=size_category(sum(c.lineage.rows for c in configs)),
    )
    MetadataConfigs({
        c.name: {
            "data_files": [{"split": split, "path": f"{c.data_dir}/{split}-*"} for split in c.lineage.splits],
            **({"default": True} if i == 0 else {}),
        }
        for i, c in enumerate(configs)
    }).to_dataset_card_data(data)
    if infos:
        from datasets.info import DatasetInfosDict

        DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def build_card(configs: list[HubConfig], repo_id: str, *, license: str = "other", language: list[str] | None = None,
               pretty_name: str | None = None, description: str | None = None, infos: dict[str, Any] | None = None):
    """The `huggingface_hub.DatasetCard` for these configs."""
    from huggingface_hub import DatasetCard

    from synth import __version__
    from synth.templating import render_file

    pretty_name = pretty_name or repo_id.split("/")[-1]
    data = card_data(configs, license, language or ["en"], pretty_name, infos)
    contexts = [config_context(c, repo_id) for c in configs]
    body = render_file(
        "cards/dataset_card.md.jinja",
        pretty_name=pretty_name,
        repo_id=repo_id,
        description=(description or "").strip(),
        configs=contexts,
        default=configs[0].name,
        multimodal=any(c["multimodal"] for c in contexts),
        total_rows=sum(c["rows"] for c in contexts),
        citations=citations(configs),
        license=license,
        version=__version__,
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
