"""Cleaning: heuristic filters, dedup, decontamination, LLM-judge scores (and CapFilt).

Every step is a `synth.pipeline` stage: heuristics and decontamination are Filters (keep or drop, and why;
never a change), dedup is an Aggregate, the judge an LLMTask, CapFilt a Map (it adds scores and may
replace a caption). The base counts and writes rejects and failures; `synth.clean.apply` runs a chain
from the one reader to the one writer. `synth.clean.registry.build_filter(name, options)` builds one by
name for the CLI, recipes and mixtures.
"""
