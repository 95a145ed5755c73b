"""The layer contracts of pyproject.toml ([tool.importlinter]), as `make test` runs them with `lint-imports`:
synth is layered (cli > run > operators > pipeline > llm > io/data/records > errors), synth.run too, and no
package of synth has an import circle, lazy imports inside functions included.

The contracts run on this checkout, and on a copy of it with one import added, to show they catch what
they are for: an upward import hidden in a function, and a circle between two siblings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the dev extra")

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint(folder: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in `folder` (its pyproject.toml, its synth/: the linter puts the folder first on the path)."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=folder, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "KEPT" in result.stdout


def copy_with(tmp_path: Path, module: str, added: str) -> Path:
    """A copy of the checkout's synth/ and pyproject.toml with `added` appended to `module` (a file path)."""
    shutil.copytree(ROOT / "synth", tmp_path / "synth", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write(added)
    return tmp_path


def test_a_lazy_upward_import_breaks_the_layers(tmp_path):
    folder = copy_with(tmp_path, "synth/io.py", "\n\ndef _later():\n    from synth.run.runner import Runner\n\n    return Runner\n")
    result = lint(folder)
    assert result.returncode == 1, result.stdout
    assert "synth.io -> synth.run.runner" in result.stdout
    assert "io, data, records and errors import nothing of the operators" in result.stdout


def test_a_circle_between_siblings_is_refused(tmp_path):
    # spec sits below recipe: recipe imports spec, so spec importing recipe closes a circle
    folder = copy_with(tmp_path, "synth/run/spec.py", "\n\ndef _later():\n    from synth.run import recipe\n\n    return recipe\n")
    result = lint(folder)
    assert result.returncode == 1, result.stdout
    assert "No cycles are allowed in synth.run" in result.stdout
    assert "synth.run.spec -> synth.run.recipe" in result.stdout
