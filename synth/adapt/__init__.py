"""Data adaptation: labelled datasets (captions, VQA, classification, grounding, OCR, QA, NLI, ...) →
instruction samples, through YAML template sets with several paraphrased instruction variants."""

from synth.adapt.engine import (
    AdaptResult,
    Renderer,
    adapt,
    adapt_dataset,
    choose_variant,
    class_list,
    parse_classes,
    parse_mapping,
)
from synth.adapt.template_set import TemplateSet, list_template_sets, load_template_set, shipped_names

__all__ = [
    "AdaptResult",
    "Renderer",
    "TemplateSet",
    "adapt",
    "adapt_dataset",
    "choose_variant",
    "class_list",
    "list_template_sets",
    "load_template_set",
    "parse_classes",
    "parse_mapping",
    "shipped_names",
]
