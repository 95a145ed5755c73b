"""CapFilt on a tiny random CLIP built from a config and loaded by path, like a user's model.

Random weights give arbitrary scores, so every test computes the expected scores independently with the
model's own forward pass (`CLIPModel(...).image_embeds/text_embeds`) and checks the mechanics against them.
"""

from __future__ import annotations

import functools
import io
import json
import math

import pytest
import torch
from PIL import Image

from synth.clean.capfilt import CapFilt, top_fraction_indices
from synth.data import RecordLog
from synth.errors import SynthError
from synth.pipeline import Aggregate, Map, run_stages

CORPUS = [
    "a red circle on a white background",
    "a blue square and a green triangle",
    "a small yellow star next to a large purple hexagon",
    "the word zebra is written in black",
    "two orange circles above a grey square",
]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "grey", "black", "white", "pink", "brown", "cyan"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A tiny CLIP runs fastest on one thread: torch's spinning workers slow it down on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP with a word-level tokenizer trained here, saved with its processor to a folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"])
    tokenizer.train_from_iterator(CORPUS + [" ".join(COLORS)], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>", model_max_length=32
    )
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.get_vocab_size(), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=fast,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@functools.lru_cache(maxsize=1)
def reference_model(model_path: str):
    from transformers import AutoProcessor, CLIPModel

    return CLIPModel.from_pretrained(model_path).eval(), AutoProcessor.from_pretrained(model_path)


def expected_scores(model_path: str, images, texts) -> list[float]:
    """Cosine similarity of each (image, text) pair from CLIP's own forward pass, one pair at a time."""
    model, processor = reference_model(model_path)
    scores = []
    with torch.no_grad():
        for image, text in zip(images, texts, strict=True):
            inputs = processor(text=[text], images=[image], return_tensors="pt")
            out = model(**inputs)
            scores.append(float((out.image_embeds[0] * out.text_embeds[0]).sum()))
    return scores


def candidate_scores(model_path: str, image, texts) -> list[float]:
    """Cosine similarity of one image with each text, from one forward pass over all of them."""
    model, processor = reference_model(model_path)
    with torch.no_grad():
        out = model(**processor(text=list(texts), images=[image], return_tensors="pt", padding=True))
    return (out.text_embeds @ out.image_embeds[0]).tolist()


def scene(i: int) -> Image.Image:
    """A small picture that differs per index (colour and a square in a different place)."""
    image = Image.new("RGB", (48, 40), COLORS[i % len(COLORS)])
    image.paste(COLORS[(i * 5 + 3) % len(COLORS)], (i * 3 % 30, i * 7 % 25, i * 3 % 30 + 12, i * 7 % 25 + 12))
    return image


def raw_records(n: int = 12) -> list[dict]:
    return [
        {"id": f"r{i}", "image": scene(i), "caption": f"a {COLORS[(i * 7) % len(COLORS)]} {CORPUS[i % len(CORPUS)]}"}
        for i in range(n)
    ]


def sft_record(i: int) -> dict:
    return {
        "id": f"s{i}",
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "describe the picture"}]},
            {"role": "assistant", "content": [{"type": "text", "text": CORPUS[i % len(CORPUS)]}]},
        ],
        "images": [scene(i)],
        "meta": json.dumps({"source": "demo", "scores": {"length": 1.0}}),
    }


def run(stage: CapFilt, records, rejects=None, failures=None) -> list[dict]:
    with RecordLog(rejects) as reject_log, RecordLog(failures) as failure_log:
        return list(run_stages([stage], records, reject_log, failure_log))


def test_scores_match_the_models_own_forward_pass(tiny_clip):
    records = raw_records()
    kept = run(CapFilt(model=tiny_clip, score_only=True), records)
    expected = expected_scores(tiny_clip, [r["image"] for r in records], [r["caption"] for r in records])
    assert [r["id"] for r in kept] == [r["id"] for r in records]
    got = [r["meta"]["scores"]["capfilt"] for r in kept]
    assert got == pytest.approx(expected, abs=1e-5)
    assert len({round(s, 6) for s in got}) > 1  # the scores really differ per pair


def test_threshold_keeps_exactly_the_pairs_at_or_above_it(tiny_clip, tmp_path):
    records = raw_records()
    expected = expected_scores(tiny_clip, [r["image"] for r in records], [r["caption"] for r in records])
    ordered = sorted(expected)
    middle = len(ordered) // 2
    assert ordered[middle] - ordered[middle - 1] > 1e-4  # a clear gap, so float noise cannot flip a pair
    threshold = (ordered[middle - 1] + ordered[middle]) / 2  # about half pass
    stage = CapFilt(model=tiny_clip, threshold=threshold, batch_size=5)
    kept = run(stage, records, tmp_path / "rejects.jsonl")
    want = [r["id"] for r, s in zip(records, expected, strict=True) if s >= threshold]
    assert [r["id"] for r in kept] == want
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in rejects) == sorted({r["id"] for r in records} - set(want))
    assert {x["reason"] for x in rejects} == {"low_score"}
    assert all(x["stage"] == "capfilt" and "< threshold" in x["detail"] for x in rejects)
    assert stage.stats.kept == len(want) and stage.stats.dropped["low_score"] == len(records) - len(want)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_top_fraction_keeps_the_best_scoring_share(tiny_clip, fraction):
    records = raw_records()
    expected = expected_scores(tiny_clip, [r["image"] for r in records], [r["caption"] for r in records])
    stage = CapFilt(model=tiny_clip, top_fraction=fraction, batch_size=4)
    kept = run(stage, records)
    count = math.ceil(fraction * len(records))
    best = sorted(range(len(records)), key=lambda i: -expected[i])[:count]
    assert [r["id"] for r in kept] == [records[i]["id"] for i in sorted(best)]
    assert stage.stats.dropped.get("below_top_fraction", 0) == len(records) - count


def test_top_fraction_math_with_ties_and_unscored():
    assert top_fraction_indices([0.1, 0.9, 0.5, None, 0.9], 0.5) == {1, 4}  # ceil(0.5 * 4) = 2
    assert top_fraction_indices([0.3, 0.3, 0.3], 0.34) == {0, 1}  # ties go by input order
    assert top_fraction_indices([], 0.5) == set()


def test_batched_scores_equal_unbatched(tiny_clip):
    records = raw_records(9)
    one = run(CapFilt(model=tiny_clip, score_only=True, batch_size=1), records)
    many = run(CapFilt(model=tiny_clip, score_only=True, batch_size=9), records)
    some = run(CapFilt(model=tiny_clip, score_only=True, batch_size=4), records)

    def scores(rows):
        return [r["meta"]["scores"]["capfilt"] for r in rows]

    assert scores(many) == pytest.approx(scores(one), abs=1e-5)
    assert scores(some) == pytest.approx(scores(one), abs=1e-5)


def test_text_modes_for_chat_samples(tiny_clip):
    records = [sft_record(i) for i in range(4)]
    answer = run(CapFilt(model=tiny_clip, score_only=True), records)  # auto: a caption request's answer
    conversation = run(CapFilt(model=tiny_clip, score_only=True, text="conversation"), records)
    images = [r["images"][0] for r in records]
    answers = [CORPUS[i % len(CORPUS)] for i in range(4)]
    assert [r["meta"]["scores"]["capfilt"] for r in answer] == pytest.approx(expected_scores(tiny_clip, images, answers), abs=1e-5)
    whole = [f"describe the picture\n{a}" for a in answers]
    assert [r["meta"]["scores"]["capfilt"] for r in conversation] == pytest.approx(
        expected_scores(tiny_clip, images, whole), abs=1e-5
    )
    # Earlier scores and provenance in meta survive (meta arrives as a JSON string from disk).
    assert answer[0]["meta"]["scores"]["length"] == 1.0 and answer[0]["meta"]["source"] == "demo"


def test_rejects_name_their_reason(tiny_clip, tmp_path):
    good = raw_records(2)
    broken = [
        {"id": "no-image", "image": None, "caption": "a red circle"},
        {"id": "no-text", "image": scene(1), "caption": "   "},
        {"id": "corrupt", "image": {"bytes": b"not an image", "path": None}, "caption": "a red circle"},
    ]
    stage = CapFilt(model=tiny_clip, score_only=True)
    kept = run(stage, good + broken, tmp_path / "rejects.jsonl")
    assert [r["id"] for r in kept] == ["r0", "r1"]
    rejects = {x["id"]: x for x in map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())}
    assert {k: v["reason"] for k, v in rejects.items()} == {"no-image": "no_image", "no-text": "no_text", "corrupt": "bad_image"}
    assert "corrupt" in rejects["corrupt"]["detail"]


def test_image_paths_and_encoded_bytes(tiny_clip, tmp_path):
    image = scene(3)
    image.save(tmp_path / "a.png")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    records = [
        {"id": "path", "image": "a.png", "caption": "a red circle"},
        {"id": "bytes", "image": {"bytes": buf.getvalue(), "path": None}, "caption": "a red circle"},
        {"id": "escape", "image": "../outside.png", "caption": "a red circle"},
    ]
    kept = run(CapFilt(model=tiny_clip, score_only=True, image_root=str(tmp_path)), records)
    assert [r["id"] for r in kept] == ["path", "bytes"]
    assert kept[0]["meta"]["scores"]["capfilt"] == pytest.approx(kept[1]["meta"]["scores"]["capfilt"], abs=1e-6)


def test_config_errors_are_clear(tiny_clip, tmp_path):
    with pytest.raises(SynthError, match="needs a vision-language backend"):
        CapFilt(model=tiny_clip, score_only=True, captioner=True)
    with pytest.raises(Exception, match="captioner cannot replace a whole conversation"):
        CapFilt(model=tiny_clip, score_only=True, captioner=True, text="conversation")
    with pytest.raises(Exception, match="top_fraction"):
        CapFilt(model=tiny_clip, top_fraction=1.5)
    with pytest.raises(SynthError, match="cannot load image-text model"):
        run(CapFilt(model=str(tmp_path / "missing"), score_only=True), raw_records(1))
    with pytest.raises(SynthError, match="no column 'text'"):
        run(CapFilt(model=tiny_clip, score_only=True, caption_column="text"), raw_records(1))


# ---------------------------------------------------------------- captioner (BLIP bootstrapping)

CANDIDATES = CORPUS + [f"a {c} shape" for c in COLORS] + ["the word zebra", "a small star"]


def test_captioner_keeps_the_better_caption_and_records_the_winner(tiny_clip, tmp_path, llm_server, make_llm_backend):
    records = raw_records(8)
    images = [r["image"] for r in records]
    # Script the VLM: even records get the candidate CLIP likes best, odd ones the one it likes least.
    synthetic, synthetic_scores = {}, []
    for i, record in enumerate(records):
        scores = candidate_scores(tiny_clip, images[i], CANDIDATES)
        pick = max(range(len(CANDIDATES)), key=scores.__getitem__) if i % 2 == 0 else min(range(len(CANDIDATES)), key=scores.__getitem__)
        synthetic[record["id"]] = CANDIDATES[pick]
        synthetic_scores.append(scores[pick])
    llm_server.script({f"[{rid}]": f"  {text}\n" for rid, text in synthetic.items()})
    template = tmp_path / "caption.jinja"
    template.write_text("Caption this image. [{{ caption.split(':')[0] }}]")
    for r in records:
        r["caption"] = f"{r['id']}: {r['caption']}"
    originals = [r["caption"] for r in records]
    original_scores = expected_scores(tiny_clip, images, originals)

    stage = CapFilt(model=tiny_clip, captioner=True, keep="best", score_only=True, caption_template=str(template), batch_size=3,
                    backend=make_llm_backend())
    kept = run(stage, records)

    assert llm_server.request_count == len(records)
    sent = llm_server.requests[0]["messages"][0]["content"]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in sent)
    winners = []
    for i, (record, out) in enumerate(zip(records, kept, strict=True)):
        meta = out["meta"]
        assert meta["capfilt"]["web_score"] == pytest.approx(original_scores[i], abs=1e-5)
        assert meta["capfilt"]["synthetic_score"] == pytest.approx(synthetic_scores[i], abs=1e-5)
        if synthetic_scores[i] > original_scores[i]:
            assert meta["capfilt"]["source"] == "synthetic"
            assert out["caption"] == synthetic[record["id"]]  # stripped reply replaces the caption
            assert meta["capfilt"]["web_text"] == record["caption"]
            assert meta["capfilt"]["synthetic_caption"] == synthetic[record["id"]]
            assert meta["scores"]["capfilt"] == pytest.approx(synthetic_scores[i], abs=1e-5)
        else:
            assert meta["capfilt"]["source"] == "web"
            assert out["caption"] == record["caption"]
            assert meta["capfilt"]["synthetic_caption"] == synthetic[record["id"]]
            assert meta["scores"]["capfilt"] == pytest.approx(original_scores[i], abs=1e-5)
        winners.append(meta["capfilt"]["source"])
    assert set(winners) == {"web", "synthetic"}  # both branches ran


def test_captioner_replaces_the_assistant_answer_and_fails_only_its_own_record(tiny_clip, llm_server, make_llm_backend, tmp_path):
    records = [sft_record(i) for i in range(3)]
    answers = [CORPUS[i % len(CORPUS)] for i in range(3)]
    images = [r["images"][0] for r in records]
    # Offer every candidate once per image through a fixed reply: the best one for image 0.
    scores = candidate_scores(tiny_clip, images[0], CANDIDATES)
    best = CANDIDATES[max(range(len(CANDIDATES)), key=scores.__getitem__)]
    llm_server.script(best)
    llm_server.fault("500", first=1)  # the first request fails for good (no retries)
    stage = CapFilt(model=tiny_clip, captioner=True, keep="best", score_only=True, batch_size=8, backend=make_llm_backend(max_retries=0))
    kept = run(stage, records, tmp_path / "rejects.jsonl", tmp_path / "failures.jsonl")
    # The failed request is a failure (failures.jsonl, retried next run), not a drop and not a silent keep.
    assert len(kept) == 2
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and failures[0]["stage"] == "capfilt" and failures[0]["reason"] == "http_500"
    assert failures[0]["id"] not in {r["id"] for r in kept}
    assert not (tmp_path / "rejects.jsonl").exists()
    assert stage.stats.failed == {"http_500": 1} and stage.answered == 2
    expected_best = expected_scores(tiny_clip, images, [best] * 3)
    expected_original = expected_scores(tiny_clip, images, answers)
    for out in kept:
        i = int(out["id"][1:])
        answer = out["messages"][-1]["content"]
        if expected_best[i] > expected_original[i]:
            assert out["meta"]["capfilt"]["source"] == "synthetic" and answer == [{"type": "text", "text": best}]
        else:
            assert out["meta"]["capfilt"]["source"] == "web" and answer[0]["text"] == answers[i]
        assert out["messages"][0] == records[i]["messages"][0]  # the user turn is untouched
    assert records[0]["messages"][-1]["content"][0]["text"] == answers[0]  # inputs are not mutated


def test_threshold_capfilt_is_a_map_and_top_fraction_an_aggregate(tiny_clip):
    streaming = CapFilt(model=tiny_clip, threshold=0.1)
    assert isinstance(streaming, Map) and not streaming.needs_all_input
    whole = CapFilt(model=tiny_clip, top_fraction=0.5)
    assert isinstance(whole, Aggregate) and isinstance(whole, CapFilt) and whole.needs_all_input
    from synth.clean.registry import build_filter

    assert build_filter("capfilt", {"model": tiny_clip, "top_fraction": 0.5}).needs_all_input
    assert not build_filter("capfilt", {"model": tiny_clip, "score_only": True}).needs_all_input


# ---------------------------------------------------------------- through the registry and `synth filter`


def test_capfilt_through_the_registry_and_the_filter_command(tiny_clip, tmp_path):
    from datasets import Dataset, Features, Value, load_from_disk
    from datasets import Image as ImageFeature
    from typer.testing import CliRunner

    from synth.clean.registry import build_filter
    from synth.cli import app

    with pytest.raises(SynthError, match="captioner: true needs a vision-language backend"):
        build_filter("capfilt", {"model": tiny_clip, "captioner": True, "threshold": 0.2})
    with pytest.raises(SynthError, match="thresold"):
        build_filter("capfilt", {"thresold": 0.2})

    records = raw_records(8)
    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    Dataset.from_list(records, features=features).save_to_disk(str(tmp_path / "raw"))
    expected = expected_scores(tiny_clip, [r["image"] for r in records], [r["caption"] for r in records])
    result = CliRunner().invoke(
        app, ["filter", str(tmp_path / "raw"), "--out", str(tmp_path / "clean"), "--filter", f"capfilt:model={tiny_clip},top_fraction=0.5"]
    )
    assert result.exit_code == 0, result.output
    kept = load_from_disk(str(tmp_path / "clean"))
    best = sorted(sorted(range(8), key=lambda i: -expected[i])[:4])
    assert kept["id"] == [records[i]["id"] for i in best]
    scores = [json.loads(m)["scores"]["capfilt"] for m in kept["meta"]]
    assert scores == pytest.approx([expected[i] for i in best], abs=1e-5)
    rejects = [json.loads(line) for line in (tmp_path / "clean" / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"below_top_fraction"} and len(rejects) == 4


def test_capfilt_with_captioner_inside_a_mix_recipe(tiny_clip, tmp_path, llm_server, monkeypatch):
    """The mix CLI builds the VLM backend from --model/--base-url; replaced answers reach the output."""
    import yaml
    from datasets import load_from_disk
    from typer.testing import CliRunner

    import synth.cli.mix  # noqa: F401
    from synth.cli import app
    from synth.records import Message, Sample, samples_to_dataset

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    samples = [
        Sample(
            messages=[
                Message(role="user", content=[{"type": "image"}, {"type": "text", "text": "describe the picture"}]),
                Message(role="assistant", content=[{"type": "text", "text": CORPUS[i % len(CORPUS)]}]),
            ],
            images=[scene(i)],
        )
        for i in range(4)
    ]
    samples_to_dataset(samples).save_to_disk(str(tmp_path / "vision"))
    images = [s.images[0] for s in samples]
    scores = candidate_scores(tiny_clip, images[0], CANDIDATES)
    best = CANDIDATES[max(range(len(CANDIDATES)), key=scores.__getitem__)]
    llm_server.script(best)
    recipe = {"sources": [{"path": "vision", "count": 4, "filters": [{"capfilt": {"model": tiny_clip, "captioner": True, "keep": "best", "score_only": True}}]}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    args = ["mix", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--model", "test-model", "--base-url", llm_server.base_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert llm_server.request_count == 4
    rows = {json.loads(r["meta"])["capfilt"]["web_score"]: r for r in load_from_disk(str(tmp_path / "out"))["train"]}
    originals = expected_scores(tiny_clip, images, [CORPUS[i % len(CORPUS)] for i in range(4)])
    synthetic = expected_scores(tiny_clip, images, [best] * 4)
    winners = set()
    for i in range(4):
        row = next(r for score, r in rows.items() if abs(score - originals[i]) < 1e-5)
        meta = json.loads(row["meta"])
        winner = "synthetic" if synthetic[i] > originals[i] else "web"
        assert meta["capfilt"]["source"] == winner and meta["source"] == "vision"
        assert row["messages"][-1]["content"][0]["text"] == (best if winner == "synthetic" else CORPUS[i % len(CORPUS)])
        winners.add(winner)
    assert "synthetic" in winners


def test_blip_itm_scores_are_the_itm_heads_match_probability(tmp_path):
    """BLIP's own filter: a tiny random BLIP image-text matching model; the score is the ITM head's
    probability of "matched", one pair at a time in BLIP's forward pass, batched in the stage."""
    from transformers import (
        AutoProcessor,
        BertTokenizerFast,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = sorted({w for line in CORPUS for w in line.lower().split()} | set(COLORS))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), model_max_length=32)
    # a wide initialisation, so that the random head's match probabilities differ from pair to pair
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "initializer_range": 0.5}
    torch.manual_seed(0)
    config = BlipConfig(
        text_config={**small, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 32,
                     "encoder_hidden_size": 32, "sep_token_id": 3, "pad_token_id": 0, "bos_token_id": 2},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16, initializer_range=0.5,
    )
    folder = tmp_path / "blip"
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)

    records = raw_records(5)
    stage = CapFilt(model=str(folder), threshold=0.5, batch_size=2)
    kept = run(stage, records, tmp_path / "rejects.jsonl")
    model, processor = BlipForImageTextRetrieval.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    expected = []
    with torch.no_grad():
        for r in records:
            out = model(**processor(images=[r["image"]], text=[r["caption"]], return_tensors="pt"), use_itm_head=True)
            expected.append(float(torch.softmax(out.itm_score, -1)[0, 1]))
    assert all(0.0 <= p <= 1.0 for p in expected), expected
    scored = {r["id"]: r["meta"]["scores"]["capfilt"] for r in kept}
    want = {r["id"]: p for r, p in zip(records, expected, strict=True) if p >= 0.5}
    assert 0 < len(want) < len(records)  # the planted model matches some pairs and not others
    assert scored.keys() == want.keys() and list(scored.values()) == pytest.approx(list(want.values()), abs=1e-5)
    assert stage.stats.seen == len(records) and sum(stage.stats.dropped.values()) == len(records) - len(want)


def test_siglip_family_loads_through_the_same_path(tmp_path):
    """A tiny random SigLIP: texts are padded to the full length, as SigLIP was trained."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import (
        AutoProcessor,
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipModel,
        SiglipProcessor,
    )
    from transformers.models.siglip import SiglipImageProcessor

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", model_max_length=16)
    torch.manual_seed(0)
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={**small, "vocab_size": tokenizer.get_vocab_size(), "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": None, "eos_token_id": 2},
        vision_config={**small, "image_size": 32, "patch_size": 8},
    )
    SiglipModel(config).save_pretrained(tmp_path)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=fast).save_pretrained(tmp_path)

    records = raw_records(4)
    kept = run(CapFilt(model=str(tmp_path), score_only=True, batch_size=3), records)
    model, processor = SiglipModel.from_pretrained(tmp_path).eval(), AutoProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        inputs = processor(text=[r["caption"] for r in records], images=[r["image"] for r in records],
                           padding="max_length", return_tensors="pt")
        out = model(**inputs)
    expected = (out.image_embeds * out.text_embeds).sum(-1).tolist()
    assert [r["meta"]["scores"]["capfilt"] for r in kept] == pytest.approx(expected, abs=1e-5)


def test_captioner_replacement_reaches_the_filter_output(tiny_clip, tmp_path, llm_server, monkeypatch):
    """`synth filter` writes back a caption the captioner replaced, not only its meta."""
    from datasets import Dataset, Features, Value, load_from_disk
    from datasets import Image as ImageFeature
    from typer.testing import CliRunner

    from synth.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    records = raw_records(4)
    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    Dataset.from_list(records, features=features).save_to_disk(str(tmp_path / "raw"))
    images = [r["image"] for r in records]
    scores = candidate_scores(tiny_clip, images[0], CANDIDATES)
    best = CANDIDATES[max(range(len(CANDIDATES)), key=scores.__getitem__)]
    llm_server.script(best)
    args = ["filter", str(tmp_path / "raw"), "--out", str(tmp_path / "clean"), "--filter",
            f"capfilt:model={tiny_clip},captioner=true,keep=best,score_only=true", "--model", "test-model", "--base-url", llm_server.base_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = load_from_disk(str(tmp_path / "clean"))
    assert out.column_names == ["id", "image", "caption", "meta"]
    originals = expected_scores(tiny_clip, images, [r["caption"] for r in records])
    synthetic = expected_scores(tiny_clip, images, [best] * 4)
    winners = set()
    for i, row in enumerate(out):
        meta = json.loads(row["meta"])
        winner = "synthetic" if synthetic[i] > originals[i] else "web"
        assert meta["capfilt"]["source"] == winner
        assert row["caption"] == (best if winner == "synthetic" else records[i]["caption"])
        winners.add(winner)
    assert "synthetic" in winners


# ---------------------------------------------------------------- issue 13: which records are captions, what is kept


def chat_record(rid: str, prompt: str, answer: str, image: int, meta: dict | None = None) -> dict:
    return {
        "id": rid,
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [scene(image)],
        "meta": meta or {},
    }


def test_captioner_never_rewrites_a_vqa_answer(tiny_clip, llm_server, make_llm_backend):
    """Caption requests get a synthetic caption; a question's answer is scored with its question, never replaced."""
    records = [
        chat_record("cap-prompt", "Describe the image briefly.", CORPUS[0], 0),
        chat_record("cap-image-only", "", CORPUS[1], 1),
        chat_record("cap-meta", "What colour is the square?", CORPUS[2], 2, {"task": "captioning", "template": "x"}),
        chat_record("vqa", "What colour is the square?", "red", 3),
        chat_record("vqa-meta", "Describe the picture.", "blue", 4, {"task": "visual question answering"}),
    ]
    images = [r["images"][0] for r in records]
    offered = [c for c in CANDIDATES if c not in CORPUS]  # never one of the web texts (that would be no new pair)
    best = offered[max(range(len(offered)), key=candidate_scores(tiny_clip, images[0], offered).__getitem__)]
    llm_server.script(best)
    stage = CapFilt(model=tiny_clip, captioner=True, score_only=True, keep="best", backend=make_llm_backend())
    out = {r["id"]: r for r in run(stage, records)}

    assert llm_server.request_count == 3  # the three caption records only
    for rid in ("vqa", "vqa-meta"):
        record = next(r for r in records if r["id"] == rid)
        assert out[rid]["messages"] == record["messages"]  # never rewritten
        assert out[rid]["meta"]["capfilt"]["source"] == "web"
        assert out[rid]["meta"]["capfilt"]["caption_record"] is False
        assert "synthetic_score" not in out[rid]["meta"]["capfilt"]
    # Other records are scored on their own text: question and answer (an answer like "red" means little alone).
    expected_vqa = expected_scores(tiny_clip, images[3:], ["What colour is the square?\nred", "Describe the picture.\nblue"])
    assert [out[r]["meta"]["scores"]["capfilt"] for r in ("vqa", "vqa-meta")] == pytest.approx(expected_vqa, abs=1e-5)
    # Caption records are scored on the caption (the answer) and may take the synthetic one.
    originals = expected_scores(tiny_clip, images[:3], CORPUS[:3])
    synthetic = expected_scores(tiny_clip, images[:3], [best] * 3)
    for i, rid in enumerate(("cap-prompt", "cap-image-only", "cap-meta")):
        info = out[rid]["meta"]["capfilt"]
        assert info["caption_record"] is True
        assert info["web_score"] == pytest.approx(originals[i], abs=1e-5)
        assert info["synthetic_score"] == pytest.approx(synthetic[i], abs=1e-5)


def test_captioner_skips_non_caption_records_in_the_llava_recipe_shape(tiny_clip, llm_server, make_llm_backend):
    """`text: answer` (as the old LLaVA recipe had) still never rewrites a VQA answer."""
    records = [chat_record("vqa", "What colour is the square?", "red", 3)]
    llm_server.script(CANDIDATES[0])
    stage = CapFilt(model=tiny_clip, captioner=True, text="answer", score_only=True, backend=make_llm_backend())
    out = run(stage, records)
    assert llm_server.request_count == 0
    assert [r["messages"] for r in out] == [records[0]["messages"]]
    assert out[0]["meta"]["scores"]["capfilt"] == pytest.approx(expected_scores(tiny_clip, [records[0]["images"][0]], ["red"])[0], abs=1e-5)


def _rendered_instructions(name: str, **variables) -> list[str]:
    """The instructions of one of synth's adapt template sets, rendered as `synth adapt` renders them."""
    import yaml

    from synth.paths import templates_dir
    from synth.templating import compile_template

    data = yaml.safe_load((templates_dir() / "adapt" / f"{name}.yaml").read_text())
    return [compile_template(t, name).render(**variables).strip() for t in data["instructions"]]


def test_the_caption_record_rule(tiny_clip):
    stage = CapFilt(model=tiny_clip, score_only=True)

    def is_caption(prompt, **extra):
        return stage.is_caption_record(chat_record("x", prompt, "an answer", 0, **extra))

    # synth's own caption templates and the kind of caption prompts LLaVA-style data uses
    captions = _rendered_instructions("caption_brief") + _rendered_instructions("caption_detailed") + [
        "<image>\nDescribe the image concisely.", "What is going on in this image?", "What do you see happening in this image?",
        "Can you describe the main features of this image for me?", "Write a caption for this photo.",
        "Summarize the visual content of the image.", "What's happening in the scene?", "",
    ]
    assert [p for p in captions if not is_caption(p)] == []
    # questions, OCR, classification, grounding, multiple choice: not captions
    question = "What colour is the square?"
    others = (
        _rendered_instructions("vqa_open", question=question) + _rendered_instructions("vqa_short", question=question)
        + _rendered_instructions("ocr") + _rendered_instructions("classification", classes=["cat", "dog"])
        + _rendered_instructions("multiple_choice", question=question, options=["red", "blue"])
        + _rendered_instructions("grounding_region", box=[0.1, 0.2, 0.3, 0.4])
        + ["Explain why the man is holding an umbrella.", "Describe the man's shirt.", "How many objects are in the image?",
           "What is unusual about this image?", "Describe the image [0.1, 0.2, 0.5, 0.6]."]
    )
    assert [p for p in others if is_caption(p)] == []
    # meta says what the record is, whatever its prompt
    assert is_caption("What colour is the square?", meta={"task": "detailed captioning"})
    assert not is_caption("Describe the image.", meta={"task": "visual question answering"})
    assert stage.is_caption_record({"id": "raw", "image": scene(0), "caption": "a red circle"})  # a caption column
    # a multi-turn conversation is not a caption, nor is a preference pair
    multi = chat_record("m", "Describe the image.", "a circle", 0)
    multi["messages"] += [{"role": "user", "content": "and the colour?"}, {"role": "assistant", "content": "red"}]
    assert not stage.is_caption_record(multi)
    pair = {"id": "p", "prompt": [{"role": "user", "content": "Describe the image."}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}], "images": [scene(0)]}
    assert not stage.is_caption_record(pair)
    # the user forces it either way, or gives their own pattern
    assert CapFilt(model=tiny_clip, score_only=True, caption_records="all").is_caption_record(chat_record("x", question, "red", 0))
    assert not CapFilt(model=tiny_clip, score_only=True, caption_records="none").is_caption_record(chat_record("x", "Describe the image.", "a", 0))
    custom = CapFilt(model=tiny_clip, score_only=True, caption_prompt=r"^caption\b")
    assert custom.is_caption_record(chat_record("x", "Caption: be brief", "a", 0))
    assert not custom.is_caption_record(chat_record("x", "Describe the image.", "a", 0))
    with pytest.raises(Exception, match="caption_prompt"):
        CapFilt(model=tiny_clip, score_only=True, caption_prompt="(unclosed")


def _scripted_captions(tiny_clip, llm_server, tmp_path, records):
    """Script one synthetic caption per raw record (even: the candidate CLIP likes best, odd: the least)."""
    synthetic, synthetic_scores = {}, {}
    for i, record in enumerate(records):
        scores = candidate_scores(tiny_clip, record["image"], CANDIDATES)
        pick = (max if i % 2 == 0 else min)(range(len(CANDIDATES)), key=scores.__getitem__)
        synthetic[record["id"]] = CANDIDATES[pick]
        synthetic_scores[record["id"]] = scores[pick]
    llm_server.script({f"[{rid}]": text for rid, text in synthetic.items()})
    template = tmp_path / "caption.jinja"
    template.write_text("Caption this image. [{{ caption.split(':')[0] }}]")
    for r in records:
        r["caption"] = f"{r['id']}: {r['caption']}"
    web = dict(zip((r["id"] for r in records), expected_scores(tiny_clip, [r["image"] for r in records], [r["caption"] for r in records])))
    return synthetic, synthetic_scores, web, str(template)


def _middle(values) -> float:
    ordered = sorted(values)
    gaps = [(b - a, (a + b) / 2) for a, b in zip(ordered, ordered[1:])]
    middle = len(ordered) // 2
    gap, cut = max(gaps[middle - 3:middle + 3])  # a clear gap near the middle, so float noise cannot flip a pair
    assert gap > 1e-4
    return cut


def test_keep_all_passing_keeps_web_and_synthetic_pairs(tiny_clip, tmp_path, llm_server, make_llm_backend):
    """BLIP's default: every text that passes the filter stays, web and synthetic (up to two pairs per image)."""
    records = raw_records(8)
    synthetic, synthetic_scores, web, template = _scripted_captions(tiny_clip, llm_server, tmp_path, records)
    threshold = _middle(list(web.values()) + list(synthetic_scores.values()))
    stage = CapFilt(model=tiny_clip, captioner=True, threshold=threshold, caption_template=template, batch_size=3,
                    backend=make_llm_backend())
    out = run(stage, records, tmp_path / "rejects.jsonl")

    want = []
    for r in records:
        if web[r["id"]] >= threshold:
            want.append((r["id"], "web", r["caption"], web[r["id"]]))
        if synthetic_scores[r["id"]] >= threshold:
            want.append((f"{r['id']}-synthetic", "synthetic", synthetic[r["id"]], synthetic_scores[r["id"]]))
    got = [(r["id"], r["meta"]["capfilt"]["source"], r["caption"], r["meta"]["scores"]["capfilt"]) for r in out]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want], abs=1e-5)
    sources = {g[1] for g in got}
    assert sources == {"web", "synthetic"}
    assert any(sum(1 for g in got if g[0].startswith(r["id"])) == 2 for r in records)  # some image has two pairs
    for r in out:
        info = r["meta"]["capfilt"]
        rid = r["id"].removesuffix("-synthetic")
        assert info["web_score"] == pytest.approx(web[rid], abs=1e-5)
        assert info["synthetic_score"] == pytest.approx(synthetic_scores[rid], abs=1e-5)
        if info["source"] == "synthetic":
            assert info["web_text"] == next(x["caption"] for x in records if x["id"] == rid)
    # an image neither of whose texts passes is dropped, with both scores in the detail
    dropped = {r["id"] for r in records if web[r["id"]] < threshold and synthetic_scores[r["id"]] < threshold}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()] if dropped else []
    assert {x["id"] for x in rejects} == dropped
    assert all(x["reason"] == "low_score" and "synthetic" in x["detail"] for x in rejects)
    rows = {(row["text"], row["records"]): row for row in stage.summary()}
    assert set(rows) == {("web", "caption"), ("synthetic", "caption")}  # raw caption rows are all caption records
    assert rows["web", "caption"]["kept"] == sum(1 for g in got if g[1] == "web")
    assert rows["synthetic", "caption"]["kept"] == sum(1 for g in got if g[1] == "synthetic")
    assert rows["web", "caption"]["scored"] == rows["synthetic", "caption"]["scored"] == len(records)


def test_keep_best_keeps_one_pair_per_image(tiny_clip, tmp_path, llm_server, make_llm_backend):
    records = raw_records(8)
    synthetic, synthetic_scores, web, template = _scripted_captions(tiny_clip, llm_server, tmp_path, records)
    stage = CapFilt(model=tiny_clip, captioner=True, keep="best", score_only=True, caption_template=template, backend=make_llm_backend())
    out = run(stage, records)
    assert [r["id"] for r in out] == [r["id"] for r in records]  # one per image, its own id
    for r, o in zip(records, out, strict=True):
        better = synthetic_scores[r["id"]] > web[r["id"]]  # ties keep the web text
        assert o["meta"]["capfilt"]["source"] == ("synthetic" if better else "web")
        assert o["caption"] == (synthetic[r["id"]] if better else r["caption"])
        assert o["meta"]["scores"]["capfilt"] == pytest.approx(max(web[r["id"]], synthetic_scores[r["id"]]), abs=1e-5)
    assert {o["meta"]["capfilt"]["source"] for o in out} == {"web", "synthetic"}


def test_top_fraction_ranks_every_pair(tiny_clip, tmp_path, llm_server, make_llm_backend):
    records = raw_records(6)
    synthetic, synthetic_scores, web, template = _scripted_captions(tiny_clip, llm_server, tmp_path, records)
    stage = CapFilt(model=tiny_clip, captioner=True, top_fraction=0.5, caption_template=template, backend=make_llm_backend())
    out = run(stage, records)
    pairs = [(r["id"], web[r["id"]]) for r in records] + [(f"{r['id']}-synthetic", synthetic_scores[r["id"]]) for r in records]
    best = {pid for pid, _ in sorted(pairs, key=lambda p: -p[1])[:6]}
    assert {r["id"] for r in out} == best


def test_without_threshold_or_top_fraction_capfilt_says_it_only_scores(tiny_clip, tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from typer.testing import CliRunner

    from synth.cli import app

    with pytest.raises(Exception, match="score_only"):
        CapFilt(model=tiny_clip)
    with pytest.raises(Exception, match="score_only"):
        CapFilt(model=tiny_clip, score_only=True, threshold=0.2)
    records = raw_records(3)
    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    Dataset.from_list(records, features=features).save_to_disk(str(tmp_path / "raw"))
    runner = CliRunner()
    result = runner.invoke(app, ["filter", str(tmp_path / "raw"), "-o", str(tmp_path / "a"), "--filter", f"capfilt:model={tiny_clip}"])
    assert result.exit_code == 1 and "threshold" in result.output and "score_only" in result.output
    assert not (tmp_path / "a").exists()
    result = runner.invoke(app, ["filter", str(tmp_path / "raw"), "-o", str(tmp_path / "b"), "--filter",
                                 f"capfilt:model={tiny_clip},score_only=true"])
    assert result.exit_code == 0, result.output
    assert "score only" in result.output and "nothing dropped" in " ".join(result.output.split())


def test_synth_filter_keeps_both_pairs_and_prints_them(tiny_clip, tmp_path, llm_server, monkeypatch):
    """`synth filter` with the captioner (keep: all_passing by default): both texts of an image can leave,
    the table says how many pairs of each source were scored and kept, report.json too."""
    from datasets import Dataset, Features, Value, load_from_disk
    from datasets import Image as ImageFeature
    from typer.testing import CliRunner

    from synth.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    records = raw_records(6)
    synthetic, synthetic_scores, web, template = _scripted_captions(tiny_clip, llm_server, tmp_path, records)
    threshold = _middle(list(web.values()) + list(synthetic_scores.values()))
    features = Features({"id": Value("string"), "image": ImageFeature(), "caption": Value("string")})
    Dataset.from_list(records, features=features).save_to_disk(str(tmp_path / "raw"))
    args = ["filter", str(tmp_path / "raw"), "-o", str(tmp_path / "clean"), "--filter",
            f"capfilt:model={tiny_clip},captioner=true,threshold={threshold!r},caption_template={template}",
            "--model", "test-model", "--base-url", llm_server.base_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = load_from_disk(str(tmp_path / "clean"))
    want = [(r["id"], r["caption"]) for r in records if web[r["id"]] >= threshold] + [
        (f"{r['id']}-synthetic", synthetic[r["id"]]) for r in records if synthetic_scores[r["id"]] >= threshold]
    assert sorted(zip(out["id"], out["caption"])) == sorted(want)
    kept_web = sum(1 for r in records if web[r["id"]] >= threshold)
    text = " ".join(result.output.split())
    assert "capfilt: image-text pairs scored and kept" in text
    assert f"web │ caption │ 6 │ {kept_web}" in text and f"synthetic │ caption │ 6 │ {len(want) - kept_web}" in text
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert {(r["text"], r["kept"]) for r in report["summaries"]["capfilt"]} == {("web", kept_web), ("synthetic", len(want) - kept_web)}
    assert report["stages"][0]["config"]["keep"] == "all_passing"


def test_capfilt_in_a_run_recipe_captions_only_caption_records(tiny_clip, tmp_path, llm_server):
    """A `filter` stage of `synth run` on adapted demo data: caption_brief samples (meta.task captioning) get a
    synthetic caption as a second sample; vqa_short samples are scored with their question and left alone."""
    from synth.run import RunOptions, run_recipe
    from tests.run_helpers import rows, write_recipe

    llm_server.script("a small shape on a plain background")
    recipe = write_recipe(tmp_path, f"""\
        name: capf
        seed: 0
        backends:
          default: {{backend: openai, model: test-model, base_url: "{llm_server.base_url}", max_retries: 0}}
        stages:
          - {{type: demo, name: shapes, count: 3}}
          - {{type: adapt, name: data, input: shapes, template: [caption_brief, vqa_short]}}
          - type: filter
            name: clean
            input: data
            filters:
              - {{name: capfilt, model: "{tiny_clip}", captioner: true, threshold: -1.0}}
        """)
    run_recipe(recipe, options=RunOptions(runs_dir=tmp_path / "runs", live=False))
    data = {r["id"]: r for r in rows(tmp_path / "runs" / "capf" / "data")}
    out = rows(tmp_path / "runs" / "capf" / "clean")
    captions = [i for i, r in data.items() if json.loads(r["meta"])["task"] == "captioning"]
    assert captions and len(captions) < len(data)
    assert llm_server.request_count == len(captions)
    for row in out:
        meta = json.loads(row["meta"])
        source_id = row["id"].removesuffix("-synthetic")
        assert meta["capfilt"]["caption_record"] == (source_id in captions)
        if meta["capfilt"]["source"] == "synthetic":
            assert row["messages"][-1]["content"][0]["text"] == "a small shape on a plain background"
            assert row["messages"][0] == data[source_id]["messages"][0]
        else:
            assert row["messages"] == data[row["id"]]["messages"]
            assert meta["capfilt"]["text"] == ("answer" if row["id"] in captions else "conversation")
    assert sorted(r["id"] for r in out) == sorted([*data, *(f"{i}-synthetic" for i in captions)])


def test_capfilt_without_captioner_is_no_llm_stage(tiny_clip):
    """Scoring alone needs no backend: the runner neither shards it as an LLM stage nor reruns it on a backend change."""
    from synth.run.adapters.clean import FilterAdapter, FilterSpec

    def spec(**options):
        return FilterSpec(type="filter", name="clean", input="data", filters=[{"name": "capfilt", "model": tiny_clip, **options}])

    adapter = FilterAdapter()
    assert not adapter.uses_llm(spec(threshold=0.2)) and adapter.backend_name(spec(threshold=0.2)) is None
    assert adapter.uses_llm(spec(threshold=0.2, captioner=True))
    with pytest.raises(Exception, match="score_only"):
        spec()


def test_a_synthetic_caption_equal_to_the_web_text_is_no_second_pair(tiny_clip, llm_server, make_llm_backend):
    records = [chat_record("c", "Describe the image.", CORPUS[0], 0), chat_record("e", "Describe the image.", CORPUS[1], 1)]
    llm_server.script(lambda body: "  A RED circle on a white  background " if len(llm_server.requests) == 1 else "")
    out = run(CapFilt(model=tiny_clip, captioner=True, score_only=True, backend=make_llm_backend(), batch_size=1), records)
    assert [r["id"] for r in out] == ["c", "e"]  # one pair each: the web text
    assert out[0]["meta"]["capfilt"]["captioner_error"] == "synthetic caption repeats the web text"
    assert out[1]["meta"]["capfilt"]["captioner_error"] == "empty caption"
    assert all("synthetic_score" not in r["meta"]["capfilt"] for r in out)


def test_the_llava_mix_recipe_builds_its_capfilt():
    from synth.clean.registry import build_filters
    from synth.mix import load_recipe
    from synth.paths import recipes_dir

    recipe = load_recipe(recipes_dir() / "mix_llava_hub.yaml")
    stage = build_filters(recipe.sources[0].filters)[-1]
    assert isinstance(stage, CapFilt) and stage.config.text == "auto" and stage.config.caption_records == "auto"
    assert stage.config.top_fraction == 0.9 and stage.config.keep == "all_passing"


def test_decode_workers_give_the_same_scores_and_rejects(tiny_clip, tmp_path):
    """Images decoded and preprocessed in a worker process, batches ahead of the model: the same pixels,
    so the same scores (bit for bit) and the same rejects as decoding in this process."""
    records = raw_records(10) + [
        {"id": "corrupt", "image": {"bytes": b"not an image", "path": None}, "caption": "a red circle"},
        {"id": "no-text", "image": scene(1), "caption": ""},
    ]
    inline = run(CapFilt(model=tiny_clip, score_only=True, batch_size=3), records, tmp_path / "a.jsonl")
    stage = CapFilt(model=tiny_clip, score_only=True, batch_size=3, decode_workers=1)
    assert stage.decode_workers() == 1
    pooled = run(stage, records, tmp_path / "b.jsonl")
    assert [r["meta"] for r in pooled] == [r["meta"] for r in inline] and len(pooled) == 10
    rejects = [(x["id"], x["reason"], x["detail"]) for x in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())]
    assert rejects == [(x["id"], x["reason"], x["detail"])
                       for x in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())]
    assert [r[:2] for r in rejects] == [("corrupt", "bad_image"), ("no-text", "no_text")]
    assert rejects[0][2].endswith("not a recognised image format")  # no buffer address: the same every run
    assert CapFilt(model=tiny_clip, score_only=True, device="cpu").decode_workers() == 0  # auto: the model has the cores


def test_bf16_autocast_on_cpu_scores_within_tolerance_and_keeps_the_decisions(tiny_clip):
    """dtype: bfloat16 on a CPU runs the model under bf16 autocast (weights stay fp32): scores within bf16
    rounding of the fp32 ones, and the keep decisions at a threshold between scores the same."""
    records = raw_records(12)
    fp32 = [r["meta"]["scores"]["capfilt"] for r in run(CapFilt(model=tiny_clip, score_only=True), records)]
    stage = CapFilt(model=tiny_clip, score_only=True, device="cpu", dtype="bfloat16")
    assert stage.scorer.autocast and stage.scorer.model.dtype == torch.float32
    bf16 = [r["meta"]["scores"]["capfilt"] for r in run(stage, records)]
    assert bf16 == pytest.approx(fp32, abs=3e-2) and bf16 != fp32
    ranked = sorted(fp32)
    gaps = [(b - a, (a + b) / 2) for a, b in zip(ranked, ranked[1:])]
    _, threshold = max(gaps)  # the widest gap: a threshold no rounding can cross
    assert [s >= threshold for s in bf16] == [s >= threshold for s in fp32]


def test_bf16_scores_near_the_threshold_are_scored_again_in_fp32(tiny_clip):
    """A pair within exact_margin of the threshold gets its fp32 score, so its keep decision is fp32's."""
    records = raw_records(12)
    fp32 = [r["meta"]["scores"]["capfilt"] for r in run(CapFilt(model=tiny_clip, score_only=True), records)]
    k = sorted(range(12), key=fp32.__getitem__)[6]
    threshold = fp32[k] - 1e-6  # fp32 keeps pair k, by a hair

    def kept(margin):
        stage = CapFilt(model=tiny_clip, threshold=threshold, device="cpu", dtype="bfloat16", exact_margin=margin)
        return {r["id"]: r["meta"]["scores"]["capfilt"] for r in run(stage, records)}

    exact = kept(0.005)
    assert sorted(exact) == sorted(records[i]["id"] for i in range(12) if fp32[i] >= threshold)
    assert exact[records[k]["id"]] == pytest.approx(fp32[k], abs=1e-6)
    rough = kept(0.0)  # no second look: pair k keeps its bf16 score, a little off
    assert rough.get(records[k]["id"], threshold - 1) != pytest.approx(fp32[k], abs=1e-6)


def test_exact_margin_auto_calibrates_on_the_first_pairs_and_keeps_fp32s_decisions(tiny_clip):
    """exact_margin: auto (the default): the first 32 pairs are scored both ways (their fp32 scores kept), the
    margin becomes 2x their largest bf16-fp32 difference, and later pairs inside it are scored again in fp32.
    The keep decisions equal fp32's; details() says how many pairs were scored twice and the margin. A second
    stage (another shard) in the same process calibrates again on its own pairs: the same scores."""
    from synth.clean.capfilt import CALIBRATION_PAIRS, load_scorer

    load_scorer.cache_clear()  # the margin is calibrated once per loaded model
    records = raw_records(48)
    fp32 = [r["meta"]["scores"]["capfilt"] for r in run(CapFilt(model=tiny_clip, score_only=True), records)]
    threshold = sorted(fp32)[24] - 1e-7
    stage = CapFilt(model=tiny_clip, threshold=threshold, device="cpu", dtype="bfloat16", batch_size=16)
    kept = {r["id"]: r["meta"]["scores"]["capfilt"] for r in run(stage, records)}
    assert sorted(kept) == sorted(records[i]["id"] for i in range(48) if fp32[i] >= threshold)
    for i in range(CALIBRATION_PAIRS):  # calibration batches keep their fp32 scores
        if records[i]["id"] in kept:
            assert kept[records[i]["id"]] == pytest.approx(fp32[i], abs=1e-6)

    scorer = load_scorer(tiny_clip, "cpu", "bfloat16", False, 16)
    bf16 = []
    with scorer._forward():
        for start in range(0, CALIBRATION_PAIRS, 16):
            batch = records[start:start + 16]
            bf16 += scorer.score_pairs([r["image"] for r in batch], [r["caption"] for r in batch])
    largest = max(abs(a - b) for a, b in zip(bf16, fp32[:CALIBRATION_PAIRS]))
    assert stage.calibrated_margin == pytest.approx(max(2 * largest, 1e-4), rel=1e-3)
    later = [i for i in range(CALIBRATION_PAIRS, 48) if abs(fp32[i] - threshold) < stage.calibrated_margin]
    details = stage.details()
    assert details["exact_margin"] == stage.calibrated_margin
    assert CALIBRATION_PAIRS <= details["fp32_rescored"] <= CALIBRATION_PAIRS + len(later) + 2
    again = CapFilt(model=tiny_clip, threshold=threshold, device="cpu", dtype="bfloat16", batch_size=16)
    assert {r["id"]: r["meta"]["scores"]["capfilt"] for r in run(again, records)} == kept
    load_scorer.cache_clear()


def test_compiled_encoders_score_like_the_eager_model_with_one_graph_per_side(tiny_clip):
    """compile: true runs torch.compile'd encoders; a short last batch is padded to batch_size, so nothing is
    compiled twice, and the scores equal the eager model's."""
    import shutil

    import torch

    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on a CPU needs a C++ compiler (CI installs g++: .ci/install-browser.sh)")
    from synth.clean.capfilt import load_scorer

    records = raw_records(10)
    eager = [r["meta"]["scores"]["capfilt"] for r in run(CapFilt(model=tiny_clip, score_only=True, batch_size=4), records)]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = run(CapFilt(model=tiny_clip, score_only=True, batch_size=4, compile=True), records)
    assert [r["meta"]["scores"]["capfilt"] for r in compiled] == pytest.approx(eager, abs=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # image side, text side: batches 4, 4, 2
    load_scorer.cache_clear()


def test_batch_size_auto_is_per_device(tiny_clip):
    """batch_size: auto scores 32 pairs per call on a CPU and 256 on CUDA (a GPU idles on 32); a number wins."""
    assert CapFilt(model=tiny_clip, score_only=True, device="cpu").batch_size == 32
    assert CapFilt(model=tiny_clip, score_only=True, device="cuda:1").batch_size == 256
    assert CapFilt(model=tiny_clip, score_only=True, device="cuda", batch_size=64).batch_size == 64
