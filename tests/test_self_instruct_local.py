"""Self-Instruct on the in-process local backend: a tiny random model (mechanics) and the real embedded
Gemma 3 270M (`slow`)."""

from __future__ import annotations

import pytest

from synth.generate.self_instruct import SelfInstruct, write_self_instruct


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from synth.llm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-lm"))


def check_counts(stats: dict) -> None:
    gen = stats["instructions"]
    rejected = sum(gen["rejected"].values())
    assert gen["kept"] + rejected + gen["surplus"] == gen["parsed"]
    assert (
        gen["requests"]
        == stats["usage"]["requests"] - stats["classification"]["tasks"] - stats["instances"]["tasks"]
    )


def test_tiny_local_model_runs_end_to_end_in_continuation_layout(tiny_model):
    """A random-weight model writes noise: the point is that the base-model path (few-shot continuation,
    batched local generation, stop strings) runs, counts add up, and the run ends without a crash."""
    from synth.llm.local import LocalBackend, LocalConfig

    backend = LocalBackend(LocalConfig(model=str(tiny_model), batch_size=4))
    config = {
        "count": 2,
        "concurrency": 2,
        "patience": 1,
        "max_rounds": 2,
        "instruction_max_tokens": 24,
        "instance_max_tokens": 24,
        "min_words": 1,
    }
    run = SelfInstruct(backend, config, show_progress=False)
    assert run.style == "continuation"
    result = run.generate()
    check_counts(result.stats)
    assert result.stats["instructions"]["requests"] == 2 * result.stats["rounds"]
    assert result.stats["usage"]["completion_tokens"] > 0
    # transformers has no presence penalty: the requests do not claim one, the report says so
    assert run.instruction_request([("a", "Write a haiku about snow.")], 0).presence_penalty is None
    assert result.stats["sampling"]["presence_penalty_applied"] is False
    backend.close()


@pytest.mark.slow
def test_embedded_gemma_smoke_run(tmp_path):
    """The real default model, offline: a small run writes a dataset with lineage."""
    from synth.llm.factory import make_backend

    backend = make_backend(None, cache=False)
    run = SelfInstruct(
        backend,
        {
            "count": 4,
            "concurrency": 4,
            "max_rounds": 4,
            "seed": 1,
            "instruction_max_tokens": 200,
            "instance_max_tokens": 128,
        },
        show_progress=False,
    )
    result = run.generate()
    check_counts(result.stats)
    assert result.stats["prompt_style"] == "continuation"
    assert result.stats["instructions"]["kept"] >= 1, result.stats
    if result.samples:
        out = write_self_instruct(result, tmp_path / "out")
        assert (out / "report.json").exists()
        assert all(s.meta["model"] == backend.model_name for s in result.samples)
    backend.close()
