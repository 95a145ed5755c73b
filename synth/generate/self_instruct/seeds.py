"""Seed tasks: the human-written tasks Self-Instruct starts from (a JSONL file; 48 ship with synth)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synth.errors import SynthError, validation_message
from synth.io import read_jsonl
from synth.paths import templates_dir
from synth.records import content_id


class SeedInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = ""
    output: str = Field(min_length=1)


class SeedTask(BaseModel):
    """One seed task: an instruction, at least one worked instance, and whether it is classification."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    instruction: str = Field(min_length=1)
    instances: list[SeedInstance] = Field(min_length=1)
    is_classification: bool = False

    @field_validator("instruction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instruction is blank")
        return value.strip()

    def task_id(self) -> str:
        return self.id or instruction_id(self.instruction)


def instruction_id(instruction: str) -> str:
    """The id of an instruction: the content id of a one-turn conversation asking it."""
    return content_id([{"role": "user", "content": instruction}])


def default_seed_path() -> Path:
    return templates_dir() / "seeds" / "self_instruct_seed_tasks.jsonl"


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Read seed tasks from JSONL; an error names the file and line and says what is wrong."""
    path = Path(path) if path else default_seed_path()
    if not path.is_file():
        raise SynthError(
            f"seed file {path} not found; pass --seeds FILE (JSONL) or leave it out for the built-in seeds"
        )
    tasks: list[SeedTask] = []
    for number, value in read_jsonl(path, "seed"):
        try:
            tasks.append(SeedTask.model_validate(value))
        except ValidationError as e:
            raise SynthError(validation_message(e, f"{path}:{number}")) from None
    if not tasks:
        raise SynthError(
            f'seed file {path} has no tasks; each line is {{"instruction", "instances", "is_classification"}}'
        )
    return tasks
