"""`synth report`: what the page holds (chart numbers, samples, evolution chains with verdicts, preference
pairs, rejects with their records, filters), that it is one self-contained file, and that data never
becomes markup. The page in a real browser: tests/test_report_browser.py."""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from synth.publish.lineage import describe, parse_meta
from synth.report.collect import Collector
from tests.cli_helpers import one_line_error, run_cli
from tests.publish_fixtures import sets  # noqa: F401 - the session fixture


class Page(HTMLParser):
    """Tags with their attributes, and the text, of an HTML page."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.tags if t == tag]


@pytest.fixture(scope="module")
def report(sets, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run_cli("report", sets["mix"], sets["evolved"], sets["prefs"], "--out", out, "--sample", 12)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "evolution chains" in result.output
    return out


@pytest.fixture(scope="module")
def context(sets):  # noqa: F811
    return Collector([describe(sets[n]) for n in ("mix", "evolved", "prefs")], sample=12).collect()


def test_one_self_contained_file(report):
    html = report.read_text()
    page = Page(html)
    images = page.all("img")
    assert images and all(a["src"].startswith("data:image/") for a in images)
    for tag, attrs in page.tags:  # nothing to fetch: no external script, style sheet, font or link target
        for name in ("src", "href"):
            value = attrs.get(name, "")
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, attrs)
        assert not (tag == "script" and attrs.get("src")), attrs
        assert not (tag == "link" and attrs.get("rel") == "stylesheet"), attrs
    csp = [a for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"] and "img-src data:" in csp[0]["content"]


def test_chart_has_each_step_with_kept_and_drop_reasons(context, sets):  # noqa: F811
    charts = {c["dataset"]: {b["name"]: b for b in c["bars"]} for c in context["charts"]}
    mix_report = json.loads((sets["mix"] / "mix_report.json").read_text())
    for source in mix_report["sources"]:
        bar = charts["mix"][f"sample {source['name']}"]
        assert (bar["seen"], bar["kept"]) == (source["after_dedup"], source["in_mix"])
        dropped = {s["reason"]: s["count"] for s in bar["segments"]}
        assert dropped == ({"not_sampled": source["after_dedup"] - source["in_mix"]} if source["in_mix"] < source["after_dedup"] else {})
    assert {"adapt vqa_short", "adapt caption_brief", "filter length (captions)", "dedup (all sources)", "split"} <= set(charts["mix"])
    evolve = json.loads((sets["evolved"] / "report.json").read_text())
    rejects = [json.loads(line) for line in (sets["evolved"] / "rejects.jsonl").read_text().splitlines()]
    for key, counts in evolve["per_round"].items():
        bar = charts["evolved"][f"mmevol round {key}"]
        assert (bar["seen"], bar["kept"]) == (counts["generated"], counts["kept"])
        per_reason = Counter(r["reason"] for r in rejects if r["round"] == int(key))
        assert {s["reason"]: s["count"] for s in bar["segments"]} == dict(per_reason)
    assert {s["reason"]: s["count"] for s in charts["prefs"]["prefs perturb"]["segments"]} == {"identical": 1}
    # widths share one scale per dataset: the widest bar is 100%
    for bars in charts.values():
        widest = max(b["kept_pct"] + sum(s["pct"] for s in b["segments"]) for b in bars.values())
        assert widest == pytest.approx(100)


def test_samples_spread_over_sources_with_images_and_provenance(context):
    mix = [s for s in context["samples"] if s["dataset"] == "mix"]
    assert {s["source"] for s in mix} == {"vqa", "captions"}
    assert {s["split"] for s in mix} == {"train", "validation"}
    for sample in mix:
        images = [p["image"] for t in sample["turns"] for p in t["parts"] if "image" in p]
        assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
        assert sample["turns"][0]["role"] == "user" and sample["turns"][1]["role"] == "assistant"
        assert dict(sample["meta"])["template"] in ("vqa_short", "caption_brief")


def test_chains_show_every_version_with_the_judges_verdict(context, sets):  # noqa: F811
    from datasets import load_from_disk

    data = load_from_disk(str(sets["evolved"]))
    meta_by_id = {row_id: parse_meta(m) for row_id, m in zip(data["id"], data["meta"])}
    rejects = [json.loads(line) for line in (sets["evolved"] / "rejects.jsonl").read_text().splitlines()]
    chains = context["chains"]
    roots = {m["root_id"] for m in meta_by_id.values()}
    assert roots <= {c["root_id"] for c in chains}
    eliminated = 0
    for chain in chains:
        steps = chain["steps"]
        assert steps[0]["status"] == "seed" and [s["round"] for s in steps] == sorted(s["round"] for s in steps)
        for step in steps:
            if step["status"] == "kept":
                assert step["verdict"] == meta_by_id[step["id"]]["judge"]  # this version's own verdict
                assert step["question"]
            elif step["status"] == "eliminated":
                eliminated += 1
                assert step["reason"] == "judge_not_improved" and "no harder than before" in step["detail"]
        kept_rounds = [s["round"] for s in steps if s["status"] == "kept"]
        assert len(kept_rounds) == len(set(kept_rounds))
        assert chain["image"] and chain["image"].startswith("data:image/")
    assert eliminated == sum(1 for r in rejects if r["stage"] == "mmevol") > 0
    # a chain with both kept and eliminated steps comes first: it tells the most
    first = chains[0]["steps"]
    assert {"kept", "eliminated"} <= {s["status"] for s in first}


def test_pairs_side_by_side_with_ratings_and_rationale(context):
    pairs = context["pairs"]
    assert len(pairs) == 8
    for pair in pairs:
        assert pair["strategy"] == "perturb" and pair["stage"] == "prefs"
        assert (pair["chosen"]["rating"], pair["rejected"]["rating"]) == ("9", "2")
        assert (pair["chosen"]["rationale"], pair["rejected"]["rationale"]) == ("matches the picture", "wrong count")
        assert pair["chosen"]["turns"][0]["parts"][0]["text"] != pair["rejected"]["turns"][0]["parts"][0]["text"]
        prompt_images = [p for t in pair["turns"] for p in t["parts"] if "image" in p]
        assert len(prompt_images) == 1 and prompt_images[0]["image"]
        assert "ratings" not in dict(pair["meta"]) and dict(pair["meta"])["strategy"] == "perturb"


def test_rejects_by_reason_with_the_record_they_name(context, sets):  # noqa: F811
    groups = {(g["dataset"], g["stage"], g["reason"]): g for g in context["rejects"]}
    evolve_rejects = [json.loads(line) for line in (sets["evolved"] / "rejects.jsonl").read_text().splitlines()]
    group = groups[("evolved", "mmevol", "judge_not_improved")]
    assert group["count"] == len(evolve_rejects)
    assert len({e["id"] for e in group["examples"]}) == len(group["examples"]) <= 3
    for example in group["examples"]:  # the version that stayed: in the evolved set itself
        assert example["record"] and example["record"]["id"] == example["id"]
    prefs = groups[("prefs", "perturb", "identical")]
    found = prefs["examples"][0]["record"]  # an id of the SFT set prefs read (followed upstream)
    assert found["dataset"] == "vqa" and found["source"] == "shapes"  # meta.source: the folder name
    assert any("image" in p for t in found["turns"] for p in t["parts"])


def test_filters_offer_sources_stages_and_reasons(report, context):
    filters = context["filters"]
    assert {"vqa", "captions", "mmevol"} <= set(filters["source"])
    assert {"adapt", "mmevol", "prefs", "perturb"} <= set(filters["stage"])
    assert {"judge_not_improved", "identical"} <= set(filters["reason"])
    page = Page(report.read_text())
    selects = [a for a in page.all("select") if "data-filter" in a]
    assert {a["data-filter"] for a in selects} == {"dataset", "source", "stage", "reason"}
    options = {a.get("value") for a in page.all("option")}
    assert set(filters["reason"]) <= options
    items = [a for a in page.tags if "item" in a[1].get("class", "").split()]
    assert items and all("data-dataset" in attrs and "data-stage" in attrs for _, attrs in items)


def test_data_never_becomes_markup(tmp_path):
    """Model text, meta values and ids are escaped: a `<script>` in a sample shows as text."""
    from synth.data import OutputFolder, write_records

    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    records = [{"messages": [{"role": "user", "content": evil}, {"role": "assistant", "content": f"ok {evil}"}],
                "meta": {"source": evil, "note": f"</dd>{evil}"}}]
    with OutputFolder(tmp_path / "evil") as folder:
        write_records(iter(records), folder.path, kind="sft", multimodal=False)
        folder.rejects.write("x<b>", evil, evil, evil)
    result = run_cli("report", tmp_path / "evil", "--out", tmp_path / "evil.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "evil.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    page = Page(html)
    assert [a for t, a in page.tags if t == "script"] == [{}]  # only the report's own inline script
    assert page.all("img") == []  # a text-only set: no image at all


def test_text_only_sets_and_one_line_errors(sets, tmp_path):  # noqa: F811
    one_line_error(run_cli("report", tmp_path / "nope", "--out", tmp_path / "r.html"), "nope")
    result = run_cli("report", sets["shapes"], "--out", tmp_path / "raw.html", "--sample", 3)
    assert result.exit_code == 0, result.output  # raw rows (the demo data): images and fields
    page = Page((tmp_path / "raw.html").read_text())
    assert len(page.all("img")) == 3
    assert not list(Path(tmp_path).glob(".*"))  # written atomically: no temp file left
