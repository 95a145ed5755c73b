"""``push``: publish outputs on the Hugging Face Hub (`synth.publish`), one config per output.

The token comes from ``HF_TOKEN`` or the saved login, never from the recipe. ``to_dir: true`` writes the
exact repository into the stage's folder instead (offline: to look at before pushing). A push is done
once per fingerprint: a resumed run does not push again unless what it publishes changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from synth.run.adapters.base import StageAdapter
from synth.run.spec import StageSpec


class PushSpec(StageSpec):
    """Publish outputs to a Hugging Face Hub dataset repo (or a local folder) with a generated dataset card."""

    type: Literal["push"]
    inputs: list[str] = Field(min_length=1, description="outputs to publish; each becomes a config named after it")
    repo: str = Field(description="the Hub dataset repo, USER/NAME")
    private: bool = False
    max_shard_size: str = "500MB"
    to_dir: bool = Field(False, description="write the repository into the stage folder instead of pushing")


class PushAdapter(StageAdapter):
    type = "push"
    Spec = PushSpec
    sharded = False
    positional = False
    output = "files"

    def execute(self, spec: PushSpec, ctx, inputs, folder, tracker) -> dict[str, Any]:
        from synth.publish.hub import check_repo_id, load_configs, push, write_folder

        refs = ctx.task.inputs
        configs = load_configs([(ref.get("stage"), Path(ref["path"])) for ref in refs])
        repo = check_repo_id(spec.repo)
        rows = sum(int(ref.get("rows") or 0) for ref in refs)
        if spec.to_dir:
            result = write_folder(configs, repo, folder.path / "repo", max_shard_size=spec.max_shard_size)
            details = {"repo": repo, "files": [str(f) for f in result.files]}
        else:
            result = push(configs, repo, private=spec.private, max_shard_size=spec.max_shard_size,
                          commit_message=f"synth run: {spec.name}")
            details = {"repo": repo, "url": result.url}
        return {"counts": {"read": rows, "kept": rows, "rows": rows, "rejected": {}, "failed": {}},
                "kind": None, "multimodal": False, "details": details}


ADAPTERS = (PushAdapter,)
