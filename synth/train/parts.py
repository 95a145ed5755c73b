"""The parts of an image-text model (vision encoder, connector, language model), found before any weights load.

The model is built on the meta device from its config (no memory, no weights), and each module path is
sorted by name: LLaVA / Gemma 3 / PaliGemma / Mllama / InternVL call the connector
``multi_modal_projector``, Idefics3 / SmolVLM ``connector``, Qwen-VL ``visual.merger`` (plus Qwen3-VL's
``visual.deepstack_merger_list``), LLaVA-NeXT / OneVision add the ``image_newline`` parameter. A recipe's
``connector:`` names it for a family synth does not know.

Stages use the parts so that `align` trains exactly the connector and `sft` puts LoRA on the language
model only (the connector in full), and `parts_table` shows what each part does before training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from synth.errors import SynthError

#: Last names of connector modules (and bare parameters) across the families transformers ships.
CONNECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "merger", "deepstack_merger_list",
                   "image_newline")
#: Last names of vision-encoder modules.
VISION_NAMES = ("vision_tower", "vision_model", "visual", "image_encoder", "vision_encoder")
PARTS = ("vision", "connector", "language")


@dataclass
class ModelParts:
    """Module paths (as in the loaded model's named_modules) of each part."""

    vision: list[str]
    connector: list[str]  # modules; bare parameters (image_newline) are in connector_params
    connector_params: list[str] = field(default_factory=list)
    vision_blocks: list[str] = field(default_factory=list)  # the vision encoder's blocks, in order

    def part_of(self, name: str) -> str:
        """'vision' | 'connector' | 'language' for a parameter name (PEFT's wrapper names too)."""
        name = base_name(name)
        for prefix in self.connector + self.connector_params:
            if name == prefix or name.startswith(prefix + "."):
                return "connector"
        for prefix in self.vision:
            if name == prefix or name.startswith(prefix + "."):
                return "vision"
        return "language"

    def not_language_regex(self) -> str:
        """A PEFT exclude_modules regex (full match) for every module of the vision side and connector."""
        prefixes = sorted(set(self.vision + self.connector))
        return "^(" + "|".join(re.escape(p) for p in prefixes) + r")(\..*)?$"


def base_name(name: str) -> str:
    """A parameter name without PEFT's wrapping (base_model.model., base_layer, modules_to_save, lora_*)."""
    name = name.removeprefix("base_model.model.")
    name = re.sub(r"\.(base_layer|original_module|modules_to_save\.[^.]+)(?=\.|$)", "", name)
    return re.sub(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\..*$", "", name)


def meta_model(config):
    """The image-text model class built from `config` on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def find_parts(model, connector: list[str] | None = None) -> ModelParts:
    """Sort `model`'s modules into parts by their names; `connector`: the recipe's own connector paths."""
    modules = dict(model.named_modules())
    vision = _outermost([n for n in modules if n and n.rsplit(".", 1)[-1] in VISION_NAMES])
    if connector:
        missing = [c for c in connector if c not in modules and _param_path(model, c) is None]
        if missing:
            raise SynthError(
                f"connector: {', '.join(missing)} is not a module of {type(model).__name__} "
                f"(its top modules: {', '.join(_top_modules(model))})"
            )
        conn = [c for c in connector if c in modules]
        conn_params = [c for c in connector if c not in modules]
    else:
        conn = _outermost([n for n in modules if n and n.rsplit(".", 1)[-1] in CONNECTOR_NAMES])
        conn_params = [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in CONNECTOR_NAMES
                       and not any(n.startswith(c + ".") for c in conn)]
    # PEFT trains whole modules, not lists of them (Qwen3-VL's deepstack_merger_list): name their items.
    conn = [f"{c}.{k}" if _is_container(modules[c]) else c for c in conn
            for k in (modules[c]._modules if _is_container(modules[c]) else [None])]
    # A connector inside the vision module (Qwen-VL's visual.merger) is the connector, the rest stays vision.
    parts = ModelParts(vision=vision, connector=conn, connector_params=conn_params)
    parts.vision_blocks = _vision_blocks(model, parts)
    return parts


def _is_container(module) -> bool:
    import torch

    return isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))


def _param_path(model, name: str):
    return dict(model.named_parameters()).get(name)


def _top_modules(model) -> list[str]:
    names = [n for n, _ in model.named_modules() if n.count(".") <= 1 and n]
    return names[:12]


def _outermost(names: list[str]) -> list[str]:
    names = sorted(set(names))
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _vision_blocks(model, parts: ModelParts) -> list[str]:
    """The transformer blocks of the vision encoder (the last ModuleList named layers/layer/blocks in it)."""
    import torch

    found: list[str] = []
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "layer", "blocks")
                and parts.part_of(name) == "vision"):
            found = [f"{name}.{i}" for i in range(len(module))]
    return found


def model_parts(info, connector: list[str] | None = None) -> ModelParts:
    """The parts of the model `info` names, from its config on the meta device (before any weights load)."""
    try:
        model = meta_model(info.config)
    except (ValueError, KeyError, TypeError) as e:
        raise SynthError(
            f"model '{info.name}' ({info.model_type}): transformers cannot build it as an image-text model: "
            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}"
        ) from None
    parts = find_parts(model, connector)
    if not parts.vision:
        raise SynthError(
            f"model '{info.name}' ({info.model_type}): synth finds no vision encoder in it "
            f"(modules: {', '.join(_top_modules(model))})"
        )
    return parts


def require_connector(info, parts: ModelParts, stage: str) -> None:
    if not parts.connector and not parts.connector_params:
        raise SynthError(
            f"{stage}: model '{info.name}' ({info.model_type}) has no connector synth knows "
            f"({', '.join(CONNECTOR_NAMES[:3])}, ...); name its module with connector: [path] in the recipe"
        )


def freeze_all_but(model, parts: ModelParts, train: tuple[str, ...]) -> None:
    """requires_grad on exactly the parameters of the parts in `train` ('connector', 'vision', 'language')."""
    for name, param in model.named_parameters():
        param.requires_grad_(parts.part_of(name) in train)


def parts_table(model, parts: ModelParts, title: str):
    """A rich table: parameters per part, how many train, and how (LoRA, full, frozen)."""
    from rich.table import Table

    rows = parts_summary(model, parts)
    table = Table(title=title, title_justify="left")
    for column in ("part", "parameters", "trainable", "how"):
        table.add_column(column, justify="right" if column in ("parameters", "trainable") else "left")
    for part, row in rows.items():
        table.add_row(part, f"{row['parameters']:,}", f"{row['trainable']:,}", row["how"])
    return table


def parts_summary(model, parts: ModelParts) -> dict[str, dict]:
    """{part: {parameters, trainable, how}}: parameters of the base model; trainable ones incl. LoRA's."""
    rows = {p: {"parameters": 0, "trainable": 0, "lora": 0, "full": 0} for p in PARTS}
    for name, param in model.named_parameters():
        part = parts.part_of(name)
        is_lora = ".lora_" in name
        is_copy = ".modules_to_save." in name
        if not is_lora and not is_copy:
            rows[part]["parameters"] += param.numel()
        if param.requires_grad:
            rows[part]["trainable"] += param.numel()
            rows[part]["lora" if is_lora else "full"] += param.numel()
    out = {}
    for part, row in rows.items():
        how = " + ".join(h for h in ("lora", "full") if row[h]) or "frozen"
        how = how.replace("lora", "LoRA")
        if part == "vision" and row["full"] and row["full"] < row["parameters"]:
            how = how.replace("full", "full (last blocks)")
        out[part] = {"parameters": row["parameters"], "trainable": row["trainable"], "how": how}
    return out


def vision_parts(plan, recipe) -> ModelParts | None:
    """The parts of the plan's model when it is an image-text model (None for text models)."""
    if not plan.info.is_vision:
        return None
    return model_parts(plan.info, getattr(recipe, "connector", None))


def show_parts(model, parts: ModelParts | None, stage: str) -> None:
    """Print the parts table (image-text models) before training starts."""
    if parts is None:
        return
    from synth.train.progress import console

    console.print(parts_table(model, parts, f"{stage}: what trains"))
