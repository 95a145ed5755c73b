"""TRL: the canonical columns (`messages` or `prompt`/`chosen`/`rejected`, `images`, `id`, `meta`).

Parquet (default) embeds the image bytes and carries the `datasets` features in its metadata, so
`load_dataset("parquet", data_files=...)` gives `images` as decoded images, ready for TRL's SFTTrainer /
DPOTrainer. With `--jsonl` the images are written once under `images/` and rows hold their relative paths.
A literal ``<image>`` in a row's text is an error naming the row: TRL's vision processors would read it as an
image placeholder (and text-only trainers gain nothing from it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from synth.export.common import Exporter, Record, check_no_image_token, write_jsonl_rows
from synth.records import dump_meta, messages_to_arrow, preference_features, sft_features

_BATCH = 256  # rows per Parquet row group: bounded memory for large image datasets


class TrlExporter(Exporter):
    name = "trl"

    def convert(self, record: Record) -> dict[str, Any]:
        multimodal = self.context.multimodal
        if self.context.kind == "preference":
            check_no_image_token(record.prompt + record.chosen + record.rejected, "TRL")
        else:
            check_no_image_token(record.messages, "TRL")
        row: dict[str, Any] = {"id": record.id}
        if self.context.kind == "preference":
            for column in ("prompt", "chosen", "rejected"):
                row[column] = messages_to_arrow(getattr(record, column), multimodal)
        else:
            row["messages"] = messages_to_arrow(record.messages, multimodal)
        if multimodal:
            if self.context.jsonl:
                row["images"] = [self.context.images.path_for(image) for image in record.images]
            else:
                row["images"] = [{"bytes": image.data, "path": None} for image in record.images]
                self.embedded_images += len(record.images)
        row["meta"] = dump_meta(record.meta)
        return row

    def write(self, rows: Iterator[dict], stem: str) -> str:
        if self.context.jsonl:
            file_name = f"{stem}.jsonl"
            write_jsonl_rows(self.context.root / file_name, rows)
            return file_name
        file_name = f"{stem}.parquet"
        self._write_parquet(file_name, rows)
        return file_name

    def _write_parquet(self, file_name: str, rows: Iterator[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        make = preference_features if self.context.kind == "preference" else sft_features
        features = make(self.context.multimodal)
        schema = features.arrow_schema  # includes the `datasets` features as metadata

        def table(batch: list[dict]):
            return pa.Table.from_pylist([features.encode_example(r) for r in batch], schema=schema)

        with pq.ParquetWriter(self.context.root / file_name, schema) as writer:
            batch: list[dict] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= _BATCH:
                    writer.write_table(table(batch))
                    batch = []
            if batch:
                writer.write_table(table(batch))

