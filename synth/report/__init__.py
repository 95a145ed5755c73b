"""`synth report`: one self-contained HTML page to look at a dataset: how it was made (a chart of every step),
samples with images and provenance, evolution chains with verdicts, preference pairs and rejects."""

from synth.report.render import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
