"""mkdocs hook: the generated pages (one per operator, the operator index, the recipe reference).

Their markdown comes from `synth.run.docs.generated_pages()` (built from the operators' config models),
so they never go stale and never live in docs/. Each per-operator page is also added to the nav under
"Operators", after the index page that mkdocs.yml lists there.
"""

from __future__ import annotations

from mkdocs.structure.files import File

_PAGES: dict[str, str] = {}


def _pages() -> dict[str, str]:
    if not _PAGES:
        from synth.run.docs import generated_pages

        _PAGES.update(generated_pages())
    return _PAGES


def on_config(config):
    _PAGES.clear()  # `mkdocs serve` rebuilds: pick up changed operator configs
    operators = [path for path in _pages() if path.startswith("operators/") and path != "operators/index.md"]
    for section in config["nav"] or []:
        if isinstance(section, dict) and "Operators" in section:
            section["Operators"] = [
                entry for entry in section["Operators"] if not (isinstance(entry, str) and entry in operators)
            ] + operators
    return config


def on_files(files, config):
    for src_uri, content in _pages().items():
        files.append(File.generated(config, src_uri, content=content))
    return files
