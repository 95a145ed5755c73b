"""The docs site and the README: the site builds with --strict (no broken link, every page in the nav,
the generated operator pages included), the README stays page one (short, its links lead somewhere, its
operator table is the generated one, its recipe runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synth.run.docs import generated_pages, rewrite_readme
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _build_site(out: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_docs_site_builds_strict_with_the_generated_pages(tmp_path):
    pytest.importorskip("mkdocs")
    result = _build_site(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    dedup = (site / "operators" / "dedup" / "index.html").read_text()
    assert "threshold" in dedup and "0.8" in dedup  # fields and defaults come from the config model
    assert (site / "reference" / "recipe" / "index.html").is_file()
    assert (site / "python-api" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """--strict is what catches a stale link: a copy of the docs with one broken link does not build."""
    pytest.importorskip("mkdocs")
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    concepts = docs / "concepts.md"
    concepts.write_text(concepts.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}"))
    result = _build_site(tmp_path / "site", config)
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr


def test_readme_is_page_one_and_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move details to a docs/ page"


def test_every_docs_page_the_readme_links_exists():
    generated = set(generated_pages())
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    missing = []
    for link in local:
        if (ROOT / link).exists():
            continue
        if link.startswith("docs/") and link.removeprefix("docs/") in generated:
            continue  # built by docs/hooks.py
        missing.append(link)
    assert not missing, f"README.md links to pages that do not exist: {missing}"


def test_readme_operator_table_is_the_generated_one(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text())
    assert not rewrite_readme(copy), "the operator table is stale: run python -m synth.run.docs --readme README.md"
    stale = tmp_path / "stale.md"
    stale.write_text("# x\n\n<!-- operators:start -->\n| old |\n<!-- operators:end -->\n\nafter\n")
    assert rewrite_readme(stale)
    text = stale.read_text()
    assert "| old |" not in text and "`dedup`" in text and text.endswith("<!-- operators:end -->\n\nafter\n")


def test_readme_recipe_validates_and_plans(tmp_path, monkeypatch):
    """The README's recipe, written out next to the demo data its CLI commands start from, passes a dry run."""
    block = README.read_text().split("<!-- recipe-example -->", 1)[1]
    recipe = re.search(r"```yaml\n(.*?)```", block, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    assert run_cli("demo-data", "demo/shapes", "--count", "10").exit_code == 0
    Path("readme.yaml").write_text(recipe)
    result = run_cli("run", "readme.yaml", "--dry-run", "--runs-dir", "runs")
    assert result.exit_code == 0, result.output
    for stage in ("shapes", "scene_qa", "answers", "unique"):
        assert stage in result.output
    assert not Path("runs").exists()  # a dry run writes nothing
