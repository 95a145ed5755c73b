"""The ``filter`` stage: a chain of filter operators in one stage (each filter is also a stage type of its
own, ``type: dedup``, through the generic operator adapter).

A filter chain item is ``{name: length, min_answer_words: 3}``, ``{length: {min_answer_words: 3}}`` or
``"length:min_answer_words=3"``; each is validated against that filter's own config, so a typo is an
error at its line. A chain holding a filter that needs its whole input (dedup) runs as one shard; LLM
filters (judge, capfilt) use the stage's ``backend``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, create_model, field_validator

from synth.clean.registry import FILTERS, parse_filter_spec
from synth.core.fields import file_contents, file_fields, resolve_files
from synth.core.operator import needs_backend
from synth.run.adapters.base import Preview, StageAdapter
from synth.run.spec import DEFAULT_BACKEND, StageSpec


def _item_model(name: str, cls) -> type:
    return create_model(f"{name.title().replace('_', '')}FilterItem", __base__=cls.Config,
                        __config__=None, name=(Literal[name], ...))


FilterItem = Annotated[Union[tuple(_item_model(n, c) for n, c in FILTERS.items())], Field(discriminator="name")]


def _item_config(item):
    """A chain item's filter config (the item without its ``name``)."""
    return FILTERS[item.name].Config.model_validate(item.model_dump(exclude={"name"}))


def _asks_llm(cls, item) -> bool:
    if not needs_backend(cls):
        return False
    asks = getattr(cls, "asks_llm", None)  # CapFilt asks a VLM only with its captioner on
    return bool(asks(_item_config(item))) if asks is not None else True


class FilterSpec(StageSpec):
    """A chain of filter operators applied in order in one stage (their rejects in one file)."""

    type: Literal["filter"]
    input: str = Field(description="the output this stage reads")
    filters: list[FilterItem] = Field(min_length=1, description="applied in order; see `synth filter --filter help`")  # type: ignore[valid-type]
    backend: str = Field(DEFAULT_BACKEND, description="backend of LLM filters (judge, capfilt)")

    backend_fields: ClassVar[tuple[str, ...]] = ("backend",)

    @field_validator("filters", mode="before")
    @classmethod
    def _flat_items(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        items = []
        for item in value:
            if isinstance(item, str):
                name, options = parse_filter_spec(item)
                item = {"name": name, **options}
            elif isinstance(item, dict) and "name" not in item and len(item) == 1:
                name, options = next(iter(item.items()))
                if options is None or isinstance(options, dict):
                    item = {"name": name, **(options or {})}
            items.append(item)
        return items


class FilterAdapter(StageAdapter):
    type = "filter"
    Spec = FilterSpec

    def _classes(self, spec: FilterSpec) -> list:
        return [FILTERS[item.name] for item in spec.filters]

    def uses_llm(self, spec: FilterSpec) -> bool:
        return any(_asks_llm(FILTERS[item.name], item) for item in spec.filters)

    def is_sharded(self, spec: FilterSpec) -> bool:
        return not any(cls.needs_all_input for cls in self._classes(spec))

    def backend_name(self, spec: FilterSpec) -> str | None:
        return spec.backend if self.uses_llm(spec) else None

    def resolve(self, spec: FilterSpec, base_dir: Path) -> FilterSpec:
        items = []
        for item in spec.filters:
            resolved = resolve_files(_item_config(item), base_dir)
            items.append(item.model_copy(update={k: getattr(resolved, k) for k in file_fields(type(resolved))}))
        return spec.model_copy(update={"filters": items})

    def fingerprint_extra(self, spec: FilterSpec) -> Any:
        # the content of every file a filter reads (a benchmark edited after a run reruns the chain)
        contents = [file_contents(_item_config(item)) for item in spec.filters]
        return contents if any(contents) else None

    @classmethod
    def nested_model(cls, loc: tuple, stage_data: dict):
        if len(loc) >= 2 and loc[0] == "filters" and isinstance(loc[1], int):
            item = (stage_data.get("filters") or [None])[loc[1]] if loc[1] < len(stage_data.get("filters") or []) else None
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(item, dict) and name is None and len(item) == 1:
                name = next(iter(item))
            return FILTERS[name].Config if name in FILTERS else None
        return None

    def stages(self, spec: FilterSpec, ctx, src) -> list:
        from synth.clean.registry import build_filter

        return [build_filter(item.name, item.model_dump(exclude={"name"}, exclude_unset=True),
                             backend_factory=lambda: ctx.backend(spec.backend)) for item in spec.filters]

    def preview(self, spec: FilterSpec, ctx, records, rows) -> Preview:
        if not self.uses_llm(spec):
            return Preview()
        return llm_filter_preview(self.stages(spec, ctx, None), records, rows)


def render_request(request, title: str = "") -> str:
    """A request as text, the way a dry run shows it (images as [image])."""
    lines = [f"--- {title}" if title else "---"]
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            text = content
        else:
            text = "".join((getattr(p, "text", None) or "") if p.type == "text" else "[image]" for p in content)
        lines.append(f"[{message.role}] {text}")
    return "\n".join(lines)


def request_tokens(request) -> int:
    """A rough prompt size: 4 characters a token (a dry run's estimate, not a tokenizer)."""
    chars = 0
    for message in request.messages:
        content = message.content
        chars += len(content) if isinstance(content, str) else sum(len(getattr(p, "text", None) or "") for p in content)
    return chars // 4 + 8 * len(request.messages) + 256 * len(request.images)


def llm_filter_preview(stages: list, records: list[dict], rows: int | None, title: str | None = None) -> Preview:
    """Prompts of the LLM filters in a chain for a few records; one request per record and LLM filter (or
    the stage's ``requests_per_record()``). Each prompt is headed by `title` (default: the filter's name) and
    the record it is for."""
    preview = Preview()
    llm_stages = [s for s in stages if hasattr(s, "format_input") or hasattr(s, "preview_requests")]
    per_record, prompt_tokens = 0, 0
    for stage in llm_stages:
        shown = records[:2]
        requests = (stage.preview_requests(shown) if hasattr(stage, "preview_requests")
                    else [stage.format_input(record) for record in shown])
        for request in requests:
            if hasattr(request, "messages"):
                key = getattr(request, "key", None)
                preview.prompts.append(render_request(request, (title or stage.name) + (f": record {key}" if key else "")))
                prompt_tokens = max(prompt_tokens, request_tokens(request))
        per_record += stage.requests_per_record() if hasattr(stage, "requests_per_record") else 1
    if rows is not None and per_record:
        preview.requests = rows * per_record
        preview.prompt_tokens = preview.requests * prompt_tokens
        max_tokens = max((getattr(s.config, "max_tokens", 0) or 0) for s in llm_stages)
        preview.completion_tokens = preview.requests * max_tokens
    return preview


ADAPTERS = (FilterAdapter,)
