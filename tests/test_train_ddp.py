"""`synth train` data-parallel under torchrun: 2 CPU processes over gloo, the tiny Llama.

Only the main process prints, deletes (overwrite: true) and writes; the adapter matches one process
trained on the same global batch (2 x 2 rows = 1 x 4 rows) up to float rounding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import adapted, fast_fields, tiny_text_model, write_recipe

#: LoRA dropout off: dropout masks come from each process's own random stream, so they differ by layout.
FIELDS = dict(max_steps=3, logging_steps=1, overwrite=True, lora={"dropout": 0.0})


def lora_b(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items() if "lora_B" in k}


@pytest.mark.slow  # about a minute on 2 shared cores: two more Python processes load torch and TRL
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    from synth.ownership import mark
    from synth.train import recipe_from_dict, run_stage

    model, data = tiny_text_model(), adapted("scene_qa_text")
    single = tmp_path / "single"
    run_stage("sft", recipe_from_dict(fast_fields(model, data, single, batch_size=4, **FIELDS), "sft"))

    out = tmp_path / "ddp"
    out.mkdir()
    mark(out, "train sft")  # an earlier synth output: overwrite: true may replace it, once
    (out / "old.txt").write_text("an earlier run")
    recipe = write_recipe(tmp_path, **fast_fields(model, data, out, batch_size=2, **FIELDS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "SYNTH_DEBUG": "",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "synth",
                           "train", "sft", str(recipe)], env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("sft done") == 1 and output.count("sft step 1/3") == 1, output  # the main process speaks

    assert not (out / "old.txt").exists()
    assert {"adapter_model.safetensors", "train_summary.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    a, b = lora_b(single), lora_b(out)  # B starts at zero: it holds what training changed
    import torch

    change = torch.cat([t.flatten() for t in a.values()])
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert change.norm() > 0 and diff.norm() / change.norm() < 1e-3
