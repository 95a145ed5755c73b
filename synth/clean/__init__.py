"""Cleaning: heuristic filters, dedup, decontamination, LLM-judge scores (and CapFilt).

Every filter is a `synth.stages.Stage`: it answers "keep or drop, and why"; the base counts and writes
rejects. `synth.clean.registry.build_filter(name, options)` builds one by name for the CLI, recipes and
mixtures.
"""
