"""Where a record is born and where it is written: the one reader and the one writer.

- `open_source(source, ...)` → a `Source` whose `.batches()` / `.records()` yield records (synth's layout,
  images as encoded ``{"bytes", "path"}`` refs) from any local or Hub dataset and any peer layout.
- `OutputFolder(out, overwrite)` + `write_records(...)` → a dataset folder renamed into place at the end,
  with ``rejects.jsonl``, ``failures.jsonl``, ``report.json`` and ``usage.json`` inside it.
- `synth.data.images`: resolving, checking and decoding images the same way in every command.
"""

from synth.data.images import ImageError, check_image_bytes, decode_image, image_ref, resolve_image_path
from synth.data.layouts import RecordError, detect_layout
from synth.data.reader import (
    EmptyDatasetError,
    Source,
    base_dir_of,
    load,
    open_source,
    quiet_datasets,
    read_records,
)
from synth.data.writer import (
    FAILURES,
    REJECTS,
    REPORT,
    USAGE,
    OutputFolder,
    RecordLog,
    build_dataset,
    check_output,
    record_to_row,
    save,
    write_records,
)

__all__ = [
    "FAILURES",
    "REJECTS",
    "REPORT",
    "USAGE",
    "EmptyDatasetError",
    "ImageError",
    "OutputFolder",
    "RecordError",
    "RecordLog",
    "Source",
    "base_dir_of",
    "build_dataset",
    "check_image_bytes",
    "check_output",
    "decode_image",
    "detect_layout",
    "image_ref",
    "load",
    "open_source",
    "quiet_datasets",
    "read_records",
    "record_to_row",
    "resolve_image_path",
    "save",
    "write_records",
]
