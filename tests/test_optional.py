"""A missing optional package (an extra not installed) is one line naming the extra, never a traceback.

`sys.modules[name] = None` makes `import name` fail as it does where the package is not installed."""

from __future__ import annotations

import sys

import pytest

from synth.errors import SynthError
from synth.optional import from_import_error, require
from tests.cli_helpers import one_line_error, run_cli
from tests.train_helpers import adapted, fast_fields, tiny_text_model, write_recipe


@pytest.fixture
def without(monkeypatch):
    def hide(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)

    return hide


@pytest.mark.parametrize("missing", ["trl", "peft", "accelerate"])
def test_train_without_the_train_extra_is_one_line(tmp_path, without, missing):
    recipe = write_recipe(tmp_path, **fast_fields(tiny_text_model(), adapted("scene_qa_text"), tmp_path / "out"))
    without(missing)
    result = run_cli("train", "sft", recipe)
    one_line_error(result, "synth train sft", f"'{missing}'", "pip install 'synth[train]'")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from synth.train import recipe_from_dict, run_stage

    out = tmp_path_factory.mktemp("optional") / "adapter"
    run_stage("sft", recipe_from_dict(fast_fields(tiny_text_model(), adapted("scene_qa_text"), out, max_steps=1), "sft"))
    return out


def test_serving_an_adapter_without_peft_is_one_line(tmp_path, without, adapter):
    without("peft")
    result = run_cli("generate", adapted("scene_qa_text"), "-o", tmp_path / "answers", "--backend", "local",
                     "--model", adapter, "--regenerate", "--limit", "1", "--no-cache")
    one_line_error(result, "serving a LoRA adapter", "'peft'", "pip install 'synth[local]'")


def test_ray_executor_without_ray(without):
    from synth.run.executors import RayExecutor

    without("ray")
    with pytest.raises(SynthError, match=r"--executor ray needs the 'ray' package.*pip install 'synth\[ray\]'"):
        RayExecutor()


def test_library_import_errors_that_name_an_extra_become_one_line():
    """transformers' own messages when a processor needs torchvision or num2words."""
    from transformers.utils.import_utils import TORCHVISION_IMPORT_ERROR

    error = from_import_error(ImportError(TORCHVISION_IMPORT_ERROR.format("Qwen2VLVideoProcessor")), "this command")
    assert str(error) == ("this command needs the 'torchvision' package, which is not installed: "
                          "pip install 'synth[train]'")
    smolvlm = ImportError("Package `num2words` is required to run SmolVLM processor. Install it with `pip install num2words`.")
    assert "'num2words'" in str(from_import_error(smolvlm, "x")) and "synth[train]" in str(from_import_error(smolvlm, "x"))
    assert from_import_error(ImportError("cannot import name 'foo' from 'bar'"), "x") is None  # not ours: re-raised


def test_a_package_broken_inside_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="not_a_module_anywhere"):
        require("brokenpkg", "x")


def test_eval_of_an_adapter_without_peft_is_one_line(tmp_path, without, adapter):
    without("peft")  # a base model alone is evaluated without it
    result = run_cli("eval", adapter, adapted("scene_qa_text"), "--limit", "1", "-o", tmp_path / "eval.json")
    one_line_error(result, "synth eval needs the 'peft' package", "pip install 'synth[train]'")
    assert not (tmp_path / "eval.json").exists()
