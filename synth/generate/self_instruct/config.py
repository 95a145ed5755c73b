"""Options of a Self-Instruct run (`SelfInstructConfig`) and the words a text-only target cannot serve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    min_words: int = Field(3, ge=1)
    max_words: int = Field(150, ge=1)
    text_only: bool = Field(True, description="reject instructions needing images, files, audio, ...")
    blocked_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_KEYWORDS))
    max_instances: int = Field(1, ge=1, description="instances (SFT samples) kept per instruction")
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
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    instruction_max_tokens: int = Field(384, ge=16)
    instance_max_tokens: int = Field(512, ge=16)
    patience: int = Field(5, ge=1, description="stop after this many rounds in a row that keep nothing")
    max_rounds: int | None = Field(None, ge=1)
    seed: int = 0
