"""`python -m synth.demo_summary DIR`: the table `make demo` ends with — every dataset it wrote, and its size."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.table import Table

from synth.console import Console


def _rows(path: Path) -> str:
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    if hasattr(data, "num_rows") and isinstance(data.num_rows, dict):
        return " + ".join(f"{n:,} {split}" for split, n in data.num_rows.items())
    return f"{data.num_rows:,}"


def summarize(root: Path) -> Table:
    table = Table(title=f"make demo wrote, under {root}/", title_justify="left", header_style="bold")
    table.add_column("output")
    table.add_column("rows", justify="right")
    table.add_column("what")
    for path in sorted(p for p in root.rglob("*") if p.is_dir()):
        if (path.parent / "dataset_dict.json").exists():
            continue  # a split of a DatasetDict, counted with its parent
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():  # save_to_disk folders
            table.add_row(str(path), _rows(path), "dataset (save_to_disk)")
        elif path.parent.name == "export":
            files = ", ".join(sorted(p.name for p in path.iterdir() if p.is_file()))
            table.add_row(str(path), "", f"export: {files}")
    return table


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    console = Console()
    console.print(summarize(root))
    console.print(f"Look at samples with: [bold].venv/bin/synth show {root}/mix -n 3[/bold]")


if __name__ == "__main__":
    main()
