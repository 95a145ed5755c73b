"""Publishing: a dataset's lineage (`lineage`), its dataset card (`card`) and the Hub upload or the same
folder offline (`hub`). The CLI is `synth push` (synth/cli/publish.py)."""

from synth.publish.card import HubConfig, build_card
from synth.publish.hub import load_configs, parse_sources, push, write_folder
from synth.publish.lineage import Lineage, Stage, describe

__all__ = ["HubConfig", "Lineage", "Stage", "build_card", "describe", "load_configs", "parse_sources", "push", "write_folder"]
