"""Self-Instruct: an LLM bootstraps new instruction data from a small set of seed tasks.

One job per module: `seeds` (the seed file), `config` (options), `prompts` (the two prompt layouts),
`parsing` (replies), `filters` (well-formed and novel instructions), `tasks` (the per-task LLM steps:
classification, instances) and `driver` (the run, and writing its output folder).
"""

from synth.generate.self_instruct.config import (
    DEFAULT_BLOCKED_KEYWORDS,
    DEFAULT_BLOCKED_PREFIXES,
    ORIGINAL_BLOCKED_KEYWORDS,
    SelfInstructConfig,
)
from synth.generate.self_instruct.driver import (
    SelfInstruct,
    SelfInstructResult,
    run_self_instruct,
    self_instruct,
    write_self_instruct,
)
from synth.generate.self_instruct.filters import InstructionFilter
from synth.generate.self_instruct.parsing import parse_instances, parse_numbered_list, parse_yes_no
from synth.generate.self_instruct.seeds import SeedInstance, SeedTask, default_seed_path, load_seed_tasks
from synth.generate.self_instruct.tasks import ClassifyTasks, GenerateInstances

__all__ = [
    "DEFAULT_BLOCKED_KEYWORDS",
    "DEFAULT_BLOCKED_PREFIXES",
    "ORIGINAL_BLOCKED_KEYWORDS",
    "ClassifyTasks",
    "GenerateInstances",
    "InstructionFilter",
    "SeedInstance",
    "SeedTask",
    "SelfInstruct",
    "SelfInstructConfig",
    "SelfInstructResult",
    "default_seed_path",
    "load_seed_tasks",
    "parse_instances",
    "parse_numbered_list",
    "parse_yes_no",
    "run_self_instruct",
    "self_instruct",
    "write_self_instruct",
]
