"""Everything the HTML report shows, gathered from the datasets and their lineage as plain dicts.

- a chart per dataset: each step's input split into kept and dropped-by-reason;
- samples (spread over the sources) with their images, turns and provenance;
- for evolved samples, the chain of versions (seed → round 1 → …) with the judge's verdict, score and
  reason at each step, eliminated attempts included (from the rejects file);
- preference pairs, chosen beside rejected, with ratings and rationale;
- rejects: a few examples per stage and reason, with the record when it can be found.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

from synth.publish.card import method_info
from synth.publish.lineage import EVOLVE_METHODS, Lineage, Stage, meta_column, pick_rows
from synth.report.thumbs import Thumbnails

# Kept is green; reasons take these in order of how often they occur (colour-blind-safe Tableau 10 order).
KEPT_COLOR = "#59a14f"
FAILED_COLOR = "#57606a"  # failed requests are not decisions about the data: one dark grey
NEUTRAL_REASONS = {"not_sampled": "#bab0ac"}  # a sampling choice, not a judgement of the data
REASON_COLORS = ("#e15759", "#f28e2b", "#4e79a7", "#b07aa1", "#edc948", "#ff9da7", "#9c755f", "#76b7b2", "#bab0ac", "#86bcb6")
REJECT_EXAMPLES = 3  # per stage and reason
MAX_TEXT = 2000  # characters of one message shown
MAX_META_VALUE = 400
LOOKUP_MAX_ROWS = 2_000_000  # datasets larger than this are not searched for reject ids


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f" … (+{len(text) - limit} chars)"


def _tabbed(values) -> str:
    """Filter attribute values: tab-separated, so names with spaces survive."""
    return "\t".join(sorted({str(v).replace("\t", " ") for v in values if v not in (None, "")}))


def _is_image(value: Any) -> bool:
    return isinstance(value, dict) and "bytes" in value and "path" in value


def produced_by(meta: dict[str, Any]) -> str:
    """The step that made a sample (the report's 'stage' filter for samples)."""
    source = meta.get("source")
    if source in EVOLVE_METHODS or source == "self-instruct":
        return str(source)
    if meta.get("strategy"):
        return "prefs"
    if isinstance(meta.get("generation"), dict):
        return "generate"
    if meta.get("template"):
        return "adapt"
    return "dataset"


def _meta_items(meta: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    items = []
    for key in sorted(meta):
        value = meta[key]
        if key in skip or value in (None, "", {}, []):
            continue
        if key == "chain" and isinstance(value, list):  # the versions are drawn in the evolution section
            items.append((key, f"{len(value)} earlier version{'s' if len(value) != 1 else ''}: " + " → ".join(
                str(link.get("id")) for link in value if isinstance(link, dict))))
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        items.append((key, _clip(text, MAX_META_VALUE)))
    return items


class Collector:
    def __init__(self, lineages: list[Lineage], sample: int = 40, thumb_size: int = 160, seed: int = 0):
        self.lineages = lineages
        self.sample = sample
        self.seed = seed
        self.thumbs = Thumbnails(thumb_size)
        self._ids: dict[int, dict[str, tuple[str, int]]] = {}  # id(dataset) -> record id -> (split, row)

    # -- rows -----------------------------------------------------------------------------------------

    def _rows(self, dataset, positions: list[int]) -> list[dict[str, Any]]:
        """Rows with images left encoded (``{"bytes", "path"}``), read straight from Arrow."""
        if not positions:
            return []
        return dataset.with_format("arrow")[positions].to_pylist()

    def _images(self, values, node: Lineage) -> list[str | None]:
        base = node.path.resolve() if node.path.is_dir() else node.path.resolve().parent
        return [self.thumbs.url(v, base) for v in values or []]

    def _turns(self, messages, images: list[str | None]) -> list[dict[str, Any]]:
        """Turns with their parts; image parts take the row's images in order."""
        pending = list(images)
        turns = []
        for message in messages or []:
            content = message.get("content")
            parts: list[dict[str, Any]] = []
            if isinstance(content, str) or content is None:
                parts.append({"text": _clip(content or "")})
            else:
                for part in content:
                    if part.get("type") == "image":
                        parts.append({"image": pending.pop(0) if pending else None})
                    else:
                        parts.append({"text": _clip(part.get("text") or "")})
            turns.append({"role": message.get("role") or "?", "parts": parts})
        return turns

    def record_view(self, row: dict[str, Any], node: Lineage, split: str) -> dict[str, Any]:
        """One record as the report shows it, whatever its layout."""
        meta = meta_parse(row.get("meta"))
        images = self._images(row.get("images"), node)
        view: dict[str, Any] = {
            "dataset": node.name, "split": split, "id": str(row.get("id") or ""),
            "source": str(meta.get("source") or ""), "stage": produced_by(meta), "kind": node.kind,
            "meta": _meta_items(meta), "turns": [], "fields": [], "images": [],
        }
        if node.kind == "sft":
            view["turns"] = self._turns(row.get("messages"), images)
        elif node.kind == "preference":
            view["turns"] = self._turns(row.get("prompt"), images)
        else:  # e.g. the raw data an engine read: its image columns and scalar fields
            for key, value in row.items():
                if key in ("id", "meta"):
                    continue
                if _is_image(value) or (isinstance(value, list) and value and all(_is_image(v) for v in value)):
                    view["images"] += self._images(value if isinstance(value, list) else [value], node)
                elif isinstance(value, (str, int, float, bool)):
                    view["fields"].append((key, _clip(str(value), MAX_META_VALUE)))
                elif value is not None:
                    view["fields"].append((key, _clip(json.dumps(value, ensure_ascii=False, default=str), MAX_META_VALUE)))
        return view

    # -- samples ----------------------------------------------------------------------------------------

    def samples(self) -> list[dict[str, Any]]:
        out = []
        for node in self.lineages:
            if node.kind == "preference":
                continue  # shown as pairs
            per_split = max(1, self.sample // max(1, len(node.splits)))
            for split, dataset in node.splits.items():
                positions = pick_rows(meta_column(dataset), per_split, self.seed)
                for row in self._rows(dataset, positions):
                    out.append(self.record_view(row, node, split))
        return out

    # -- evolution chains -------------------------------------------------------------------------------

    def chains(self) -> list[dict[str, Any]]:
        out = []
        for node in self.lineages:
            found = []
            for i, (split, dataset) in enumerate(node.splits.items()):
                found += self._chains_of(node, split, dataset, i == 0)
            # Chains with both kept and eliminated steps tell the most; then the longest.
            found.sort(key=lambda c: (-(bool(c["reasons"]) and any(s["status"] == "kept" for s in c["steps"])),
                                      -len(c["steps"]), c["root_id"]))
            out += found[: self.sample]
        return out

    def _chains_of(self, node: Lineage, split: str, dataset, first_split: bool) -> list[dict[str, Any]]:
        metas = meta_column(dataset)
        evolve_rejects = any(row.get("stage") in EVOLVE_METHODS for row in node.rejects)
        if not any(m.get("chain") for m in metas) and not (first_split and evolve_rejects):
            return []
        ids = [str(v) for v in dataset.with_format("arrow")["id"].to_pylist()] if "id" in dataset.column_names else []
        by_id = {i: m for i, m in zip(ids, metas)}
        deepest: dict[str, int] = {}
        for pos, meta in enumerate(metas):
            root = meta.get("root_id")
            if root and meta.get("source") in EVOLVE_METHODS:
                if root not in deepest or int(meta.get("round") or 0) > int(metas[deepest[root]].get("round") or 0):
                    deepest[root] = pos
        attempts = defaultdict(list)  # version id -> eliminated attempts from it
        for row in node.rejects:
            if row.get("stage") not in EVOLVE_METHODS:
                continue
            # Newer rejects carry round and operator; older ones only say "round N, operator: detail".
            detail = str(row.get("detail") or "")
            match = re.match(r"round (\d+), ([\w-]+): (.*)", detail, re.DOTALL)
            round_ = row.get("round", match.group(1) if match else None)
            operator = row.get("operator") or (match.group(2) if match else "")
            if round_ is not None:
                attempts[str(row.get("id"))].append((int(round_), str(operator), str(row.get("reason")), match.group(3) if match else detail))
        positions = sorted(deepest.values())
        known = set(ids) | {str(m.get("root_id")) for m in metas} | {
            str(link.get("id")) for m in metas for link in m.get("chain") or [] if isinstance(link, dict)}
        chains = self._never_kept(node, split, attempts, known) if first_split else []
        for pos, row in zip(positions, self._rows(dataset, positions)):
            meta = metas[pos]
            method = str(meta.get("source"))
            final = self._final_fields(row, node)
            steps = []
            for link in meta.get("chain") or []:
                link_meta = by_id.get(str(link.get("id")), {})
                steps.append(self._step(link, link_meta.get("judge"), "seed" if not link.get("round") else "kept"))
            steps.append(self._step({**final, "round": meta.get("round"), "operator": meta.get("operator"), "id": ids[pos],
                                     "form": meta.get("form")}, meta.get("judge"), "kept"))
            for version_id in [str(link.get("id")) for link in meta.get("chain") or []] + [ids[pos]]:
                for round_, operator, reason, detail in attempts.get(version_id, []):
                    steps.append(_eliminated(round_, operator, reason, detail))
            steps.sort(key=lambda s: (s["round"], s["status"] != "eliminated"))
            reasons = [s["reason"] for s in steps if s["status"] == "eliminated"]
            images = self._images(row.get("images"), node)
            chains.append({
                "dataset": node.name, "split": split, "root_id": str(meta.get("root_id")), "method": method,
                "source": method, "stage": method, "reasons": reasons, "reason_attr": _tabbed(reasons),
                "image": images[0] if images else None, "steps": steps, "model": meta.get("model"),
            })
        return chains

    def _never_kept(self, node: Lineage, split: str, attempts: dict, known: set[str]) -> list[dict[str, Any]]:
        """Seeds whose every evolution was eliminated: no version of them is in the dataset, only rejects."""
        chains = []
        for seed_id, tries in attempts.items():
            if seed_id in known:
                continue
            record = self.lookup(node, seed_id)
            steps = [self._step({"id": seed_id}, None, "seed")]
            steps += [_eliminated(*attempt) for attempt in sorted(tries)]
            method = next((str(row.get("stage")) for row in node.rejects if str(row.get("id")) == seed_id), "evolve")
            image = (record or {}).get("images") or [p["image"] for t in (record or {}).get("turns", []) for p in t["parts"] if "image" in p]
            reasons = [r for _, _, r, _ in tries]
            chains.append({"dataset": node.name, "split": split, "root_id": seed_id, "method": method, "source": method,
                           "stage": method, "reasons": reasons, "reason_attr": _tabbed(reasons),
                           "image": image[0] if image else None, "steps": steps, "model": None})
        return chains

    @staticmethod
    def _final_fields(row: dict[str, Any], node: Lineage) -> dict[str, str]:
        def text(message):
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text") or "" for p in content or [] if p.get("type") == "text")

        messages = row.get("messages") or []
        user = next((text(m) for m in messages if m.get("role") == "user"), "")
        answer = next((text(m) for m in messages if m.get("role") == "assistant"), "")
        return {"question": user, "answer": answer}

    @staticmethod
    def _step(fields: dict[str, Any], verdict: Any, status: str) -> dict[str, Any]:
        return {
            "round": int(fields.get("round") or 0),
            "operator": fields.get("operator") or "",
            "form": fields.get("form") or "",
            "id": str(fields.get("id") or ""),
            "question": _clip(str(fields.get("question") or fields.get("instruction") or "")),
            "answer": _clip(str(fields.get("answer") or "")),
            "verdict": verdict if isinstance(verdict, dict) else None,
            "status": status,
            "reason": "",
            "detail": "",
        }

    # -- preference pairs -------------------------------------------------------------------------------

    def pairs(self) -> list[dict[str, Any]]:
        out = []
        for node in self.lineages:
            if node.kind != "preference":
                continue
            per_split = max(1, self.sample // max(1, len(node.splits)))
            for split, dataset in node.splits.items():
                positions = pick_rows(meta_column(dataset), per_split, self.seed)
                for row in self._rows(dataset, positions):
                    out.append(self._pair(row, node, split))
        return out

    def _pair(self, row: dict[str, Any], node: Lineage, split: str) -> dict[str, Any]:
        view = self.record_view(row, node, split)
        meta = meta_parse(row.get("meta"))
        sides = {}
        for side in ("chosen", "rejected"):
            sides[side] = {
                "turns": self._turns(row.get(side), []),
                "rating": _side_value(meta, side, ("ratings", "rating", "scores", "score")),
                "rationale": _side_value(meta, side, ("rationales", "rationale", "reasons", "reason")),
            }
        shared = meta.get("rationale") if isinstance(meta.get("rationale"), str) else None
        skip = ("ratings", "rating", "rationale", "rationales", "chosen_rating", "rejected_rating", "chosen_rationale",
                "rejected_rationale", "chosen_score", "rejected_score")
        return {**view, "stage": "prefs", "strategy": str(meta.get("strategy") or ""), "chosen": sides["chosen"],
                "rejected": sides["rejected"], "rationale": shared, "meta": _meta_items(meta, skip)}

    # -- rejects ----------------------------------------------------------------------------------------

    def rejects(self) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        owners: dict[tuple[str, str, str], Lineage] = {}
        for top in self.lineages:
            for node in top.walk():
                for row in node.rejects:
                    key = (node.name, str(row.get("stage") or "?"), str(row.get("reason") or "?"))
                    groups[key].append(row)
                    owners[key] = node
                for row in node.failures:  # not decisions about the data, but a reader wants to see them too
                    key = (node.name, str(row.get("stage") or "?"), "failed: " + str(row.get("reason") or "?"))
                    groups[key].append(row)
                    owners[key] = node
        out = []
        for (dataset, stage, reason), rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            node = owners[(dataset, stage, reason)]
            examples, shown = [], set()
            distinct = [r for r in rows if not (str(r.get("id")) in shown or shown.add(str(r.get("id"))))]
            for row in distinct[:REJECT_EXAMPLES]:
                found = self.lookup(node, str(row.get("id")))
                examples.append({"id": str(row.get("id")), "detail": _clip(str(row.get("detail") or ""), MAX_META_VALUE),
                                 "record": found})
            sources = {e["record"]["source"] for e in examples if e["record"] and e["record"]["source"]}
            out.append({"dataset": dataset, "stage": stage, "reason": reason, "count": len(rows), "examples": examples,
                        "sources": sorted(sources), "source_attr": _tabbed(sources)})
        return out

    def lookup(self, node: Lineage, record_id: str) -> dict[str, Any] | None:
        """The record a reject names: in the dataset that wrote the rejects file or upstream of it."""
        for candidate in node.walk():
            for split, dataset in candidate.splits.items():
                if "id" not in dataset.column_names or len(dataset) > LOOKUP_MAX_ROWS:
                    continue
                index = self._ids.get(id(dataset))
                if index is None:
                    index = {str(v): (split, i) for i, v in enumerate(dataset.with_format("arrow")["id"].to_pylist())}
                    self._ids[id(dataset)] = index
                if record_id in index:
                    split_name, position = index[record_id]
                    return self.record_view(self._rows(dataset, [position])[0], candidate, split_name)
        return None

    # -- the chart --------------------------------------------------------------------------------------

    def charts(self, reason_colors: dict[str, str]) -> list[dict[str, Any]]:
        charts = []
        for node in self.lineages:
            stages = node.all_stages()
            totals = [_total(s) for s in stages]
            # A raw source listed only for its size (e.g. all 200 images when 4 were evolved) does not set the
            # scale; drawn wider than the others, it is cut at 100% and says so.
            scaled = [t for s, t in zip(stages, totals) if s.kind != "dataset"]
            top = max(scaled or totals, default=0) or 1
            bars = []
            for stage, total in zip(stages, totals):
                clipped = total > top
                if clipped:
                    stage = Stage(**{**stage.__dict__, "kept": stage.kept, "notes": [*stage.notes, "not to scale"]})
                segments = [{"reason": r, "count": n, "pct": 100 * n / top, "color": reason_colors.get(r, "#999"), "failed": False}
                            for r, n in sorted(stage.dropped.items(), key=lambda kv: -kv[1]) if n]
                segments += [{"reason": f"failed: {r}", "count": n, "pct": 100 * n / top, "color": FAILED_COLOR, "failed": True}
                             for r, n in sorted(stage.failed.items(), key=lambda kv: -kv[1]) if n]
                bars.append({
                    "name": stage.name, "kind": stage.kind, "source": stage.source or "", "seen": stage.seen, "kept": stage.kept,
                    "kept_pct": min(100.0, 100 * (stage.kept or 0) / top), "segments": segments, "notes": stage.notes,
                    "total": total, "settings": stage.settings, "clipped": clipped,
                })
            charts.append({"dataset": node.name, "bars": bars})
        return charts

    def reason_colors(self) -> dict[str, str]:
        """One colour per drop reason, the most frequent first; sampling grey, failures dark grey."""
        counts: Counter = Counter()
        failed: set[str] = set()
        for top in self.lineages:
            for stage in top.all_stages():
                counts.update(stage.dropped)
                failed.update(f"failed: {r}" for r in stage.failed)
            for node in top.walk():
                counts.update(str(r.get("reason") or "?") for r in node.rejects)
                failed.update(f"failed: {r.get('reason') or '?'}" for r in node.failures)
        ranked = [reason for reason, _ in counts.most_common() if reason not in NEUTRAL_REASONS]
        colors = {reason: REASON_COLORS[i % len(REASON_COLORS)] for i, reason in enumerate(ranked)}
        colors.update({r: c for r, c in NEUTRAL_REASONS.items() if r in counts})
        colors.update({r: FAILED_COLOR for r in failed})
        return colors

    # -- everything -------------------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        colors = self.reason_colors()
        samples, chains, pairs, rejects = self.samples(), self.chains(), self.pairs(), self.rejects()
        items = samples + chains + pairs + rejects
        datasets = [_dataset_summary(node) for node in self.lineages]
        return {
            "datasets": datasets,
            "charts": self.charts(colors),
            "samples": samples,
            "chains": chains,
            "pairs": pairs,
            "rejects": rejects,
            "reason_colors": colors,
            "kept_color": KEPT_COLOR,
            "filters": {
                "dataset": sorted({i["dataset"] for i in items}),
                "source": sorted({s for i in items for s in ([i["source"]] if i.get("source") else []) + i.get("sources", [])}),
                "stage": sorted({i["stage"] for i in items if i.get("stage")}),
                "reason": sorted({r for i in items for r in ([i["reason"]] if i.get("reason") else []) + i.get("reasons", [])}),
            },
            "images": self.thumbs.count,
        }


def _eliminated(round_: int, operator: str, reason: str, detail: str) -> dict[str, Any]:
    """An evolution attempt the rules or the judge turned down (the sample kept its previous version)."""
    return {"round": round_, "operator": operator, "form": "", "id": "", "question": "", "answer": "", "verdict": None,
            "status": "eliminated", "reason": reason, "detail": _clip(detail, MAX_META_VALUE)}


def _total(stage: Stage) -> int:
    kept_and_dropped = (stage.kept or 0) + stage.dropped_total + sum(stage.failed.values())
    return max(stage.seen or 0, kept_and_dropped)


def _side_value(meta: dict[str, Any], side: str, keys: tuple[str, ...]) -> str | None:
    """A rating or rationale for one side: ``meta[key][side]``, ``meta[f"{side}_{key}"]`` or a [chosen, rejected] pair."""
    for key in keys:
        value = meta.get(key)
        if isinstance(value, dict) and side in value:
            return _text(value[side])
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return _text(value[0 if side == "chosen" else 1])
        flat = meta.get(f"{side}_{key[:-1] if key.endswith('s') else key}")
        if flat is not None:
            return _text(flat)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return _clip(value, MAX_META_VALUE)
    if isinstance(value, float):
        return f"{value:g}"
    return _clip(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), MAX_META_VALUE)


def meta_parse(value: Any) -> dict[str, Any]:
    from synth.publish.lineage import parse_meta

    return parse_meta(value)


def _dataset_summary(node: Lineage) -> dict[str, Any]:
    tokens = node.tokens()
    return {
        "name": node.name,
        "path": str(node.path),
        "kind": node.kind,
        "rows": node.rows,
        "splits": [(k, len(v)) for k, v in node.splits.items()],
        "multimodal": node.multimodal,
        "methods": [method_info(m)["label"] for m in node.all_methods()],
        "models": node.models(),
        "tokens": tokens if tokens["requests"] or tokens["prompt_tokens"] else None,
        "rejects": sum(len(n.rejects) for n in node.walk()),
        "failures": sum(len(n.failures) for n in node.walk()),
        "sidecars": [p.name for p in node.sidecars.values()],
        "upstream": [str(up.path) for up in node.upstream],
    }

