"""Options of a Self-Instruct run (`SelfInstructConfig`) and the words a text-only target cannot serve.

The defaults are those of the published pipeline (Wang et al. 2023, yizhongw/self-instruct) unless a
field's description says where synth differs and how to get the original.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synth.core.fields import FilePath
from synth.pipeline import StageConfig

#: Words that ask for something a text-only model cannot see or produce (matched as whole words).
DEFAULT_BLOCKED_KEYWORDS = [
    "image",
    "images",
    "picture",
    "pictures",
    "photo",
    "photos",
    "photograph",
    "graph",
    "graphs",
    "chart",
    "charts",
    "diagram",
    "diagrams",
    "flowchart",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "drawing",
    "plot",
    "plots",
    "sketch",
    "video",
    "videos",
    "audio",
    "music",
    "song recording",
    "sound",
    "go to",
    "visit",
    "website link",
    "screenshot",
    "attached",
    "attachment",
]

#: The original's keyword list (synth's default above adds audio, video, charts, attachments, ...).
ORIGINAL_BLOCKED_KEYWORDS = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
    "plot", "go to",
]  # fmt: skip

#: The original drops these openings: the model tends to prefix tasks with "Write a program", leaving it
#: unclear whether to write code or give the result.
DEFAULT_BLOCKED_PREFIXES = ["Write a program"]


class SelfInstructConfig(StageConfig):
    """Options of a Self-Instruct run (all have defaults)."""

    count: int = Field(100, ge=1, description="new instructions to keep")
    concurrency: int = Field(8, ge=1, description="instruction requests sent together per round")
    seed_examples: int = Field(6, ge=0, description="seed tasks shown per request")
    machine_examples: int = Field(
        2, ge=0, description="machine-written tasks shown per request (when there are)"
    )
    new_per_request: int = Field(8, ge=1, description="new tasks asked for per request")
    rouge_threshold: float = Field(
        0.7, ge=0, le=1, description="reject when ROUGE-L F against the pool exceeds it"
    )
    use_stemmer: bool = Field(False, description="Porter stemming in ROUGE-L (as rouge_score's use_stemmer)")
    min_words: int = Field(
        4, ge=1, description="fewer words: too_short (the original drops 3 words or fewer)"
    )
    max_words: int = Field(150, ge=1, description="more words: too_long")
    text_only: bool = Field(True, description="reject instructions needing images, files, audio, ...")
    blocked_keywords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_KEYWORDS),
        description="whole words a text-only model cannot serve; the original's list: ORIGINAL_BLOCKED_KEYWORDS",
    )
    blocked_prefixes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_PREFIXES),
        description="instructions starting with one of these (any case) are rejected as blocked_prefix",
    )
    max_instances: int = Field(
        5, ge=1, description="instances (SFT samples) kept per instruction (original: 5)"
    )
    responses: bool = Field(
        False,
        description="answer each instruction (+ input) again with the LLM instead of keeping the output "
        "written with the instance (e.g. a stronger chat model answers)",
    )
    instance_examples: int = Field(3, ge=1, description="seed tasks shown when generating instances")
    classification_examples: int = Field(6, ge=1, description="seed tasks of each kind shown for yes/no")
    prompt_style: Literal["auto", "chat", "continuation"] = Field(
        "auto", description="continuation for base models (local backend), chat for chat APIs"
    )
    # Instruction sampling as published: temperature 0.7, top_p 0.5, presence penalty 2.
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the instruction requests")
    top_p: float = Field(0.5, gt=0, le=1, description="top-p of the instruction requests")
    presence_penalty: float | None = Field(
        2.0,
        ge=-2,
        le=2,
        description="presence penalty of the instruction requests, where the backend has one (OpenAI-compatible "
        "servers; the local backend has none)",
    )
    # Instances as published: greedy, presence penalty 1.5 (classification is always greedy).
    instance_temperature: float = Field(0.0, ge=0, description="sampling temperature of the instance requests (0 = greedy)")
    instance_top_p: float | None = Field(None, gt=0, le=1, description="top-p of the instance requests (None: not sent)")
    instance_presence_penalty: float | None = Field(1.5, ge=-2, le=2, description="presence penalty of the instance requests")
    instruction_max_tokens: int = Field(384, ge=16, description="token limit of each instruction reply")
    instance_max_tokens: int = Field(512, ge=16, description="token limit of each instance reply")
    patience: int = Field(5, ge=1, description="stop after this many rounds in a row that keep nothing")
    max_rounds: int | None = Field(None, ge=1, description="stop after this many instruction rounds (default: no limit)")
    seed: int = Field(0, description="seed of the examples shown and of the requests")
    seeds: FilePath | None = Field(None, description="seed tasks (JSONL); default: the 48 shipped ones")
