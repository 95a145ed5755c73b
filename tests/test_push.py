"""`synth push`: the --to-dir folder (configs, splits, shards, embedded images, the card), no secret written
anywhere, the upload path up to the network call, and the offline / no-token errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.cli_helpers import one_line_error, run_cli
from tests.publish_fixtures import sets  # noqa: F401 - the session fixture

FAKE_TOKEN = "hf_plantedFakeToken0123456789abcdefXYZ"
SHARD = re.compile(r"^(?P<config>[\w.-]+)/(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """A Hub client that would be online, with no saved login of the real user and no token unless planted."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return tmp_path


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hub_dir(sets, tmp_path_factory):  # noqa: F811
    """`synth push --to-dir` over an SFT mix (train + validation), a preference set and an evolved set,
    with a small shard size so the mix's train split is cut into several shards."""
    out = tmp_path_factory.mktemp("push") / "hub"
    result = run_cli("push", sets["mix"], sets["prefs"], f"evolved={sets['evolved']}", "--repo", "alice/shapes-synth",
                     "--to-dir", out, "--max-shard-size", "20KB", "--license", "cc-by-4.0")
    assert result.exit_code == 0, result.output
    assert "nothing uploaded" in result.output
    return out


def test_to_dir_holds_exactly_the_shards_and_the_card(hub_dir, sets):  # noqa: F811
    files = files_under(hub_dir)
    assert "README.md" in files
    shards = sorted(files - {"README.md", ".synth-output"})  # the marker lets a later --overwrite replace it
    assert shards and all(SHARD.match(f) for f in shards), shards  # nothing else in the folder
    by_split: dict[tuple[str, str], list[re.Match]] = {}
    for f in shards:
        m = SHARD.match(f)
        by_split.setdefault((m["config"], m["split"]), []).append(m)
    # sft and preference occur once each... but two SFT sets: the mix and the evolved one keep folder names
    assert set(by_split) == {("mix", "train"), ("mix", "validation"), ("preference", "train"), ("evolved", "train")}
    for matches in by_split.values():  # datasets' own naming: every index of N, N the same for all
        count = {int(m["count"]) for m in matches}
        assert len(count) == 1 and sorted(int(m["index"]) for m in matches) == list(range(count.pop()))
    assert len(by_split[("mix", "train")]) > 1  # 20KB shards: the train split was cut


def test_load_dataset_reads_it_back_with_images(hub_dir, sets):  # noqa: F811
    from datasets import load_dataset, load_from_disk

    default = load_dataset(str(hub_dir))  # the first config is the default
    source = load_from_disk(str(sets["mix"]))
    assert set(default) == {"train", "validation"}
    for split in ("train", "validation"):
        assert default[split]["id"] == source[split]["id"]
        assert default[split]["messages"] == source[split]["messages"]
    image = default["train"][0]["images"][0]
    assert isinstance(image, Image.Image) and image.size == (64, 64)
    assert image.convert("RGB").tobytes() == source["train"][0]["images"][0].convert("RGB").tobytes()

    prefs = load_dataset(str(hub_dir), "preference")["train"]
    assert set(prefs.column_names) == {"id", "prompt", "chosen", "rejected", "images", "meta"}
    assert prefs["id"] == load_from_disk(str(sets["prefs"]))["id"]
    assert isinstance(prefs[0]["images"][0], Image.Image)
    evolved = load_dataset(str(hub_dir), "evolved")["train"]
    assert len(evolved) == len(load_from_disk(str(sets["evolved"])))


def test_shards_embed_the_original_image_bytes(hub_dir, sets):  # noqa: F811
    from datasets import Image as ImageFeature
    from datasets import List, load_from_disk

    source = load_from_disk(str(sets["prefs"])).cast_column("images", List(ImageFeature(decode=False)))
    table = pq.read_table(hub_dir / "preference" / "train-00000-of-00001.parquet")
    cells = table.column("images").to_pylist()
    for shard_images, original in zip(cells, source["images"], strict=True):
        assert [i["bytes"] for i in shard_images] == [o["bytes"] for o in original]  # the bytes, not a path
        assert Image.open(io.BytesIO(shard_images[0]["bytes"])).format == "PNG"
    assert b"huggingface" in table.schema.metadata  # datasets' features travel in the Parquet schema


def test_shards_are_the_ones_push_to_hub_would_upload(hub_dir, sets, monkeypatch):  # noqa: F811
    """Run `datasets`' own shard-and-upload step with a stand-in for its upload call (the Hub cannot be
    reached here) and compare: the same file names and the same bytes as the --to-dir folder, and the same
    split sizes as its card. This pins the folder to what `push_to_hub` does, in this `datasets` version."""
    from datasets import load_from_disk
    from datasets.arrow_dataset import HfFileSystemResolvedRepositoryPath
    from huggingface_hub import DatasetCard, HfApi

    uploaded: dict[str, bytes] = {}

    def preupload(self, repo_id, additions, **kwargs):
        for add in additions:
            uploaded[add.path_in_repo] = Path(add.path_or_fileobj).read_bytes()

    monkeypatch.setattr(HfApi, "preupload_lfs_files", preupload)
    target = HfFileSystemResolvedRepositoryPath(repo_type="dataset", repo_id="alice/shapes-synth", revision="main", path_in_repo="")
    infos = {i["config_name"]: i for i in DatasetCard.load(hub_dir / "README.md").data.to_dict()["dataset_info"]}
    for split, dataset in load_from_disk(str(sets["mix"])).items():
        _, paths, _, split_info, size = dataset._push_parquet_shards_to_hub(
            resolved_output_path=target, data_dir="mix", split=split, token=None, create_pr=False,
            max_shard_size="20KB", num_shards=None, embed_external_files=True, num_proc=None,
        )
        assert paths == sorted(str(p.relative_to(hub_dir)) for p in (hub_dir / "mix").glob(f"{split}-*.parquet"))
        for path in paths:
            assert uploaded[path] == (hub_dir / path).read_bytes(), path
        card_split = next(s for s in infos["mix"]["splits"] if s["name"] == split)
        assert (card_split["num_bytes"], card_split["num_examples"]) == (split_info.num_bytes, split_info.num_examples)
    assert infos["mix"]["download_size"] == sum(len(b) for b in uploaded.values())


def test_card_metadata(hub_dir, sets):  # noqa: F811
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(hub_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["language"] == ["en"]
    assert data["task_categories"] == ["image-text-to-text"]
    assert data["size_categories"] == "n<1K"
    tags = data["tags"]
    for tag in ("synthetic", "synth", "sft", "dpo", "multimodal", "template-adaptation", "data-mixture",
                "deduplicated", "mmevol", "perturbed-negatives"):
        assert tag in tags, tag
    assert "self-instruct" not in tags and "evol-instruct" not in tags
    configs = {c["config_name"]: c for c in data["configs"]}
    assert configs["mix"]["default"] is True and "default" not in configs["preference"]
    assert configs["mix"]["data_files"] == [{"split": "train", "path": "mix/train-*"}, {"split": "validation", "path": "mix/validation-*"}]
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in infos["mix"]["splits"]} == {"train": 24, "validation": 6}
    written = sum(p.stat().st_size for p in (hub_dir / "mix").glob("*.parquet"))
    assert infos["mix"]["download_size"] == written


def test_card_text_says_how_each_config_was_made(hub_dir, sets):  # noqa: F811
    text = (hub_dir / "README.md").read_text()
    body = text.split("\n---\n", 1)[1]
    assert 'load_dataset("alice/shapes-synth", "mix")' in body
    assert 'load_dataset("alice/shapes-synth", "preference")' in body
    mix_report = json.loads((sets["mix"] / "mix_report.json").read_text())
    # the mix's own numbers, per step: sampling with drop reasons, the split
    for source in mix_report["sources"]:
        row = f"| sample {source['name']} | {source['after_dedup']:,} | {source['in_mix']:,} |"
        assert row in body, row
    assert f"train {mix_report['train']}, validation {mix_report['validation']}" in body
    assert "| adapt vqa_short | 12 | 12 |" in body  # upstream: the adapt step's report.json
    evolve_report = json.loads((sets["evolved"] / "report.json").read_text())
    for key, counts in evolve_report["per_round"].items():
        assert f"| mmevol round {key} | {counts['generated']} | {counts['kept']} |" in body
    assert "judge_not_improved" in body and "identical 1" in body
    usage = json.loads((sets["evolved"] / "usage.json").read_text())["usage"]  # an operator's usage.json
    assert f"{usage['requests']:,} requests, {usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion tokens" in body
    assert "temperature=0.7" in body and "`test-model`" in body and "vqa_short (" in body
    # sample rows are fenced code, so model text cannot turn into markup
    assert re.search(r"```text\nuser: <image>", body)
    # citations: MMEvol (+ Evol-Instruct it builds on) and POVID for perturbed negatives; nothing unused
    assert "@article{luo2024mmevol" in body and "@inproceedings{xu2024wizardlm" in body and "@article{zhou2024povid" in body
    for absent in ("wang2023selfinstruct", "li2022blip", "cui2024ultrafeedback", "yu2025rlaifv", "li2024vlfeedback"):
        assert absent not in body


def test_no_secret_anywhere(sets, hub_env, monkeypatch, tmp_path):  # noqa: F811
    """Plant a token, then write the folder and run the upload path (stand-ins at the network calls): the
    token reaches the Hub calls and nothing else: not the folder, the card, the output, caches or logs."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "hub"
    result = run_cli("push", sets["evolved"], "--repo", "alice/x", "--to-dir", out)
    assert result.exit_code == 0, result.output
    calls = install_hub_stand_ins(monkeypatch)
    pushed = run_cli("push", sets["evolved"], "--repo", "alice/x")
    assert pushed.exit_code == 0, pushed.output
    assert {c[2].get("token") for c in calls} == {FAKE_TOKEN}  # the calls did get it
    for text in (result.output, pushed.output, "".join(c[3] for c in calls)):
        assert FAKE_TOKEN not in text
    for root in (tmp_path, sets["evolved"]):
        for path in root.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def install_hub_stand_ins(monkeypatch) -> list[tuple[str, tuple, dict, str]]:
    """Stand-ins for the three calls that reach the Hub (the Hub cannot be reached from the tests). Each
    records (name, args, kwargs, what would be sent: the card text or a summary of the DatasetDict)."""
    from datasets import DatasetDict
    from huggingface_hub import DatasetCard, HfApi

    calls: list[tuple[str, tuple, dict, str]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", (repo_id,), {**kwargs, "token": self.token}, ""))
        return f"https://huggingface.co/datasets/{repo_id}"

    def card_push(self, repo_id, **kwargs):
        calls.append(("card", (repo_id,), kwargs, str(self)))

    def dict_push(self, repo_id, **kwargs):
        summary = json.dumps({split: {"rows": len(d), "columns": d.column_names} for split, d in self.items()})
        calls.append(("push_to_hub", (repo_id,), kwargs, summary))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(DatasetCard, "push_to_hub", card_push)
    monkeypatch.setattr(DatasetDict, "push_to_hub", dict_push)
    return calls


def test_upload_reaches_the_hub_calls_with_the_right_arguments(sets, hub_env, monkeypatch, hub_dir):  # noqa: F811
    """The upload path up to the network: the Hub cannot be reached from here, so stand-ins replace
    `HfApi.create_repo`, `DatasetCard.push_to_hub` and `DatasetDict.push_to_hub` (which shards, embeds the
    images and uploads) and record what they were asked to do."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    calls = install_hub_stand_ins(monkeypatch)
    result = run_cli("push", sets["mix"], sets["prefs"], f"evolved={sets['evolved']}", "--repo", "alice/shapes-synth",
                     "--private", "--max-shard-size", "20KB", "--license", "cc-by-4.0", "--message", "first version")
    assert result.exit_code == 0, result.output
    assert "pushed mix (30 rows), preference (8 rows), evolved (6 rows) to https://huggingface.co/datasets/alice/shapes-synth" in result.output
    assert [c[0] for c in calls] == ["create_repo", "card", "push_to_hub", "push_to_hub", "push_to_hub"]
    assert calls[0][1] == ("alice/shapes-synth",)
    assert calls[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True, "token": FAKE_TOKEN}
    card_kwargs = calls[1][2]
    assert card_kwargs["repo_type"] == "dataset" and card_kwargs["token"] == FAKE_TOKEN
    assert card_kwargs["commit_message"] == "first version: dataset card"
    # The card uploaded first is the --to-dir card without dataset_info: push_to_hub adds each config's.
    uploaded = calls[1][3]
    local = (hub_dir / "README.md").read_text()
    assert "dataset_info" not in uploaded and "dataset_info" in local
    assert uploaded.split("\n---\n", 1)[1] == local.split("\n---\n", 1)[1]
    expected = [("mix", True, {"train": 24, "validation": 6}), ("preference", False, {"train": 8}), ("evolved", False, {"train": 6})]
    for call, (name, default, rows) in zip(calls[2:], expected, strict=True):
        kwargs = call[2]
        assert call[1] == ("alice/shapes-synth",)
        assert kwargs["config_name"] == name and kwargs["data_dir"] == name and kwargs["set_default"] is default
        assert kwargs["max_shard_size"] == "20KB" and kwargs["embed_external_files"] is True
        assert kwargs["private"] is True and kwargs["token"] == FAKE_TOKEN
        assert kwargs["commit_message"] == f"first version: config {name}"
        assert {s: v["rows"] for s, v in json.loads(call[3]).items()} == rows


def test_offline_or_no_token_is_one_line_and_nothing_is_uploaded(sets, hub_env, monkeypatch):  # noqa: F811
    calls = install_hub_stand_ins(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line_error(run_cli("push", sets["mix"], "--repo", "alice/x"), "HF_HUB_OFFLINE", "nothing was uploaded", "--to-dir")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN")
    one_line_error(run_cli("push", sets["mix"], "--repo", "alice/x"), "no Hugging Face token", "HF_TOKEN", "nothing was uploaded")
    assert calls == []


def test_hub_errors_are_one_line(sets, hub_env, monkeypatch):  # noqa: F811
    """A 401 from the Hub (stand-in: the Hub cannot be reached here) becomes one line naming the cause."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(self, repo_id, **kwargs):
        response = type("Response", (), {"status_code": 401, "headers": {}, "request": None})()
        try:
            raise HfHubHTTPError("401 Client Error: Unauthorized for url", response=response)
        except TypeError:  # older clients build the error differently
            raise HfHubHTTPError("401 Client Error: Unauthorized", response=httpx.Response(401)) from None

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(HfApi, "create_repo", refuse)
    line = one_line_error(run_cli("push", sets["mix"], "--repo", "alice/x"), "push to alice/x failed", "invalid or expired")
    assert FAKE_TOKEN not in line


def test_bad_inputs(sets, tmp_path):  # noqa: F811
    one_line_error(run_cli("push", sets["mix"], "--repo", "not a repo", "--to-dir", tmp_path / "a"), "--repo", "USER/NAME")
    one_line_error(run_cli("push", sets["shapes"], "--repo", "alice/x", "--to-dir", tmp_path / "b"),
                   "not an SFT", "preference")
    one_line_error(run_cli("push", f"x={sets['mix']}", f"x={sets['evolved']}", "--repo", "alice/x", "--to-dir", tmp_path / "c"),
                   "'x' is used twice")
    one_line_error(run_cli("push", f"data={sets['mix']}", "--repo", "alice/x", "--to-dir", tmp_path / "d"),
                   "'data' cannot be a config name")
    one_line_error(run_cli("push", tmp_path / "missing", "--repo", "alice/x", "--to-dir", tmp_path / "e"), "missing")
    (tmp_path / "taken").mkdir()
    one_line_error(run_cli("push", sets["mix"], "--repo", "alice/x", "--to-dir", tmp_path / "taken"), "--overwrite")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left behind


def test_legacy_sidecars_beside_the_folder_are_read(sets, tmp_path):  # noqa: F811
    """Older synth wrote OUT.report.json / OUT.rejects.jsonl beside the output; the card still reads them."""
    import shutil

    from synth.publish.lineage import describe

    old = tmp_path / "evolved"
    shutil.copytree(sets["evolved"], old)
    for name in ("report.json", "rejects.jsonl", "usage.json"):
        (old / name).rename(tmp_path / f"evolved.{name}")
    lineage = describe(old)
    assert set(lineage.sidecars) == {"report.json", "rejects.jsonl", "usage.json"}
    assert lineage.rejects and [s.name for s in lineage.stages][-1] == "mmevol round 2"
    assert lineage.tokens()["requests"] == json.loads((tmp_path / "evolved.usage.json").read_text())["usage"]["requests"]


def test_every_method_the_provenance_shows_has_a_card_entry():
    """A card names what made the data: each method `methods_of` can find has a label and a description."""
    from synth.publish.card import method_catalog
    from synth.publish.lineage import methods_of

    meta = {"source": "self-instruct", "template": "vqa_short", "generation": {"temperature": 0.7},
            "pseudo_label": {"gate": "agreement", "agreement": 0.8}, "scores": {"capfilt": 0.3}, "mix": {"source": "a"}}
    found = methods_of(meta)
    assert "pseudo-label" in found and "capfilt" in found
    catalog = method_catalog()["methods"]
    for method in found:
        assert catalog[method]["label"] and catalog[method]["what"], method
