"""The stage contract and the code that runs stages between the reader and the writer."""

from synth.pipeline.stage import (
    Aggregate,
    Failed,
    Filter,
    Map,
    Rejected,
    Stage,
    StageConfig,
    StageStats,
    batched,
    run_stages,
)

__all__ = ["Aggregate", "Failed", "Filter", "Map", "Rejected", "Stage", "StageConfig", "StageStats", "batched", "run_stages"]
