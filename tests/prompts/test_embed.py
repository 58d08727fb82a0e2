import hashlib
import json
import logging
import pickle

import pytest
import torch
from safetensors.torch import load_file

from blade.prompts import PromptEncoder, embed_prompts, load_embeddings

PROMPTS = [
    "a red circle moving left",
    "a blue square moving up",
    "a red circle moving left",  # duplicate of line 1
    "",
    "a green   triangle moving down &amp; fading",  # Wan's prompt_clean collapses spaces, unescapes
    "a yellow circle moving right",
    "a purple square moving left slowly",
]
UNIQUE = [p for i, p in enumerate(PROMPTS) if p and p not in PROMPTS[:i]]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def _direct_embedding(folder, text):
    """Encoder output for `text` alone: no padding tokens at all, so no mask is involved."""
    import transformers

    classes = json.loads((folder / "model_index.json").read_text())
    tokenizer = getattr(transformers, classes["tokenizer"][1]).from_pretrained(folder / "tokenizer")
    encoder = getattr(transformers, classes["text_encoder"][1]).from_pretrained(folder / "text_encoder")
    ids = tokenizer([text], return_tensors="pt").input_ids  # [1, n]
    with torch.no_grad():
        return encoder(ids).last_hidden_state[0]  # [n, D]


def _file_digests(folder):
    return {
        path.name: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in folder.glob("*.safetensors")
    }


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_round_trip_and_zero_padding(pipeline_folders, prompt_file, tmp_path, family):
    folder = pipeline_folders[family]
    stored = embed_prompts(folder, prompt_file, tmp_path / "out", batch_size=2, shard_size=3, progress=False)
    expected_length = {"wan": 512, "cogvideox": 226}[family]

    reopened = load_embeddings(tmp_path / "out")
    assert reopened.prompts == UNIQUE
    assert len(reopened) == len(UNIQUE)
    assert reopened.max_length == expected_length
    assert reopened.negative_embeds.shape == (expected_length, 24)
    index = json.loads((tmp_path / "out" / "index.json").read_text(encoding="utf-8"))
    assert [entry["shard"] for entry in index["prompts"]] == [0, 0, 0, 1, 1]
    assert [entry["row"] for entry in index["prompts"]] == [0, 1, 2, 0, 1]
    assert index["prompts"][0]["sha256"] == hashlib.sha256(UNIQUE[0].encode()).hexdigest()
    assert index["source"]["duplicate_lines"] == [[3, 1]]

    encoder = PromptEncoder(folder)
    for position, prompt in enumerate(UNIQUE):
        item = reopened[position]
        assert item["prompt"] == prompt
        assert torch.equal(item["prompt_embeds"], stored[position]["prompt_embeds"])
        text = encoder.clean([prompt])[0]
        direct = _direct_embedding(folder, text)
        length = direct.shape[0]
        assert item["length"] == length
        assert item["prompt_embeds"].shape == (expected_length, 24)
        torch.testing.assert_close(item["prompt_embeds"][:length], direct, atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(item["prompt_embeds"][length:]) == 0
        assert item["attention_mask"].sum() == length
        assert not item["attention_mask"][length:].any()

    direct_negative = _direct_embedding(folder, "")
    torch.testing.assert_close(reopened.negative_embeds[:1], direct_negative, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(reopened.negative_embeds[1:]) == 0


@pytest.mark.parametrize(
    ("family", "pipeline_name", "padding", "length"),
    [("wan", "WanPipeline", "zero", 512), ("cogvideox", "CogVideoXPipeline", "encoder", 226)],
)
def test_matches_pipeline_encode(pipeline_folders, prompt_file, tmp_path, family, pipeline_name, padding, length):
    """Stored embeddings equal the diffusers pipeline's own prompt encoding: WanPipeline's masked,
    prompt_clean-ed and zero-padded one, and CogVideoXPipeline's unmasked one with padding="encoder"."""
    import diffusers
    import transformers

    folder = pipeline_folders[family]
    stored = embed_prompts(folder, prompt_file, tmp_path / "out", padding=padding, progress=False)
    classes = json.loads((folder / "model_index.json").read_text())
    pipe = getattr(diffusers, pipeline_name)(
        tokenizer=getattr(transformers, classes["tokenizer"][1]).from_pretrained(folder / "tokenizer"),
        text_encoder=getattr(transformers, classes["text_encoder"][1]).from_pretrained(folder / "text_encoder"),
        vae=None, scheduler=None, transformer=None,
    )
    with torch.no_grad():
        reference = pipe._get_t5_prompt_embeds(UNIQUE, max_sequence_length=length, device=torch.device("cpu"))
    ours = torch.stack([stored[i]["prompt_embeds"] for i in range(len(stored))])  # [N, L, D]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    pad_rows = torch.count_nonzero(ours[0, stored[0]["length"]:])
    if padding == "zero":
        assert pad_rows == 0
    else:
        assert pad_rows > 0


def test_truncation_flagged_and_logged(pipeline_folders, tmp_path, caplog):
    long_prompt = "a red circle moving left " * 30  # 749 bytes: ByT5 needs 749 + EOS tokens
    path = tmp_path / "prompts.txt"
    path.write_text(f"short prompt\n{long_prompt}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="blade.prompts.embed"):
        stored = embed_prompts(pipeline_folders["wan"], path, tmp_path / "out", progress=False)
    assert stored.truncated.tolist() == [False, True]
    assert stored.lengths.tolist() == [13, 512]
    assert torch.count_nonzero(stored[1]["prompt_embeds"][-1]) > 0
    assert "1 prompts truncated to 512 tokens (line 2)" in caplog.text


def test_max_length_resolution(pipeline_folders, prompt_file, tmp_path):
    other = embed_prompts(pipeline_folders["other"], prompt_file, tmp_path / "a", progress=False)
    assert other.max_length == 40  # the tokenizer's model_max_length
    assert other.truncated.tolist() == [False, False, True, False, False]
    from tiny_text_encoders import build_pipeline_folder

    toy_like = build_pipeline_folder(tmp_path, "wan", tokenizer_max_length=40)
    toy = embed_prompts(toy_like, prompt_file, tmp_path / "toy", progress=False)
    assert toy.max_length == 40  # below Wan's 512, so the tokenizer's limit wins
    assert toy.index["max_length_source"] == "tokenizer model_max_length, below the pipeline convention"
    explicit = embed_prompts(pipeline_folders["wan"], prompt_file, tmp_path / "b", max_length=17, progress=False)
    assert explicit.max_length == 17
    assert explicit[0]["prompt_embeds"].shape == (17, 24)
    assert explicit.index["max_length_source"] == "argument"


def test_interrupted_run_resumes(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    reference = embed_prompts(folder, prompt_file, tmp_path / "reference", batch_size=2, shard_size=2, progress=False)

    def crash_after_first_shard(number, path):
        raise KeyboardInterrupt(f"simulated interruption after shard {number}")

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        embed_prompts(folder, prompt_file, out, batch_size=2, shard_size=2, progress=False,
                      on_shard_written=crash_after_first_shard)
    assert not (out / "index.json").exists()
    finished = _file_digests(out)
    assert len([name for name in finished if name.startswith("shard-")]) == 1
    (out / ".shard-00001-leftover.safetensors.abc.tmp").write_bytes(b"partial")

    written = []
    resumed = embed_prompts(folder, prompt_file, out, batch_size=2, shard_size=2, progress=False,
                            on_shard_written=lambda number, path: written.append(number))
    assert written == [1, 2]
    after = _file_digests(out)
    for name, digest in finished.items():
        assert after[name] == digest, f"{name} was rewritten"
    assert not list(out.glob(".*.tmp"))
    assert resumed.prompts == reference.prompts
    for position in range(len(reference)):
        assert torch.equal(resumed[position]["prompt_embeds"], reference[position]["prompt_embeds"])
    assert torch.equal(resumed.negative_embeds, reference.negative_embeds)
    assert json.loads((out / "index.json").read_text())["prompts"] == reference.index["prompts"]


def test_cached_rerun_never_encodes(pipeline_folders, prompt_file, tmp_path, monkeypatch):
    folder = pipeline_folders["wan"]
    first = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False)
    before = _file_digests(tmp_path / "out")

    def fail(*args, **kwargs):
        raise AssertionError("encode called although every shard is cached")

    monkeypatch.setattr(PromptEncoder, "encode", fail)
    second = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False)
    assert _file_digests(tmp_path / "out") == before
    assert second.index == first.index


def test_corrupt_shard_recomputed(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    first = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False)
    shard = sorted((tmp_path / "out").glob("shard-00001-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    written = []
    second = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False,
                           on_shard_written=lambda number, path: written.append(number))
    assert written == [1]
    assert torch.equal(second[2]["prompt_embeds"], first[2]["prompt_embeds"])


def test_key_change_recomputes_and_cleans(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    out = tmp_path / "out"
    embed_prompts(folder, prompt_file, out, shard_size=2, progress=False)
    shards_before = {path.name for path in out.glob("shard-*")}
    negative_before = {path.name for path in out.glob("negative-*")}

    # A new negative prompt recomputes only the negative file.
    written = []
    changed = embed_prompts(folder, prompt_file, out, shard_size=2, negative_prompt="blurry, static",
                            progress=False, on_shard_written=lambda number, path: written.append(number))
    assert written == []
    assert {path.name for path in out.glob("shard-*")} == shards_before
    assert {path.name for path in out.glob("negative-*")}.isdisjoint(negative_before)
    assert changed.negative_prompt == "blurry, static"
    assert changed.negative_length == len("blurry, static") + 1

    # A new dtype changes the key: every shard is rewritten and the old files removed.
    half = embed_prompts(folder, prompt_file, out, shard_size=2, dtype="bfloat16", progress=False)
    assert half.dtype == torch.bfloat16
    assert half[0]["prompt_embeds"].dtype == torch.bfloat16
    assert {path.name for path in out.glob("shard-*")}.isdisjoint(shards_before)
    assert len(list(out.glob("shard-*"))) == 3
    assert len(list(out.glob("negative-*"))) == 1


def test_other_weights_change_key(pipeline_folders, prompt_file, tmp_path):
    from tiny_text_encoders import build_pipeline_folder

    reseeded = build_pipeline_folder(tmp_path, "wan", seed=1)
    out = tmp_path / "out"
    first = embed_prompts(pipeline_folders["wan"], prompt_file, out, progress=False)
    first_embeds = first[0]["prompt_embeds"].clone()
    first_key = first.cache_key
    second = embed_prompts(reseeded, prompt_file, out, progress=False)
    assert second.cache_key != first_key
    assert not torch.equal(second[0]["prompt_embeds"], first_embeds)
    assert len(list(out.glob("shard-*"))) == 1


def test_loader_reads_shards_only(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    stored = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False)
    shard = sorted((tmp_path / "out").glob("shard-00001-*.safetensors"))[0]
    tensors = load_file(shard)
    assert set(tensors) == {"embeddings", "lengths", "truncated"}
    assert torch.equal(tensors["embeddings"][1], stored[3]["prompt_embeds"])
    assert stored.index_of("  a blue square moving up ") == 1

    copy = pickle.loads(pickle.dumps(stored))  # what a DataLoader worker receives
    loader = torch.utils.data.DataLoader(copy, batch_size=2, shuffle=False)
    batches = list(loader)
    assert [len(batch["prompt"]) for batch in batches] == [2, 2, 1]
    assert batches[1]["prompt_embeds"].shape == (2, 512, 24)
    assert torch.equal(batches[2]["prompt_embeds"][0], stored[4]["prompt_embeds"])

    pooled = stored.mean_pooled()
    item = stored[2]
    expected = item["prompt_embeds"][: item["length"]].mean(dim=0)
    torch.testing.assert_close(pooled[2], expected)


def test_mixed_folder_rejected(pipeline_folders, prompt_file, tmp_path):
    out = tmp_path / "out"
    embed_prompts(pipeline_folders["wan"], prompt_file, out, progress=False)
    index = json.loads((out / "index.json").read_text())
    index["cache_key"] = "0" * 64
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="written with another cache key"):
        load_embeddings(out)


def test_invalid_arguments_rejected(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        embed_prompts(folder, prompt_file, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match=r"padding must be one of \('zero', 'encoder'\), got 'left'"):
        embed_prompts(folder, prompt_file, tmp_path, padding="left")
    with pytest.raises(ValueError, match=r"dtype must be one of .*got 'int8'"):
        embed_prompts(folder, prompt_file, tmp_path, dtype="int8")
    with pytest.raises(ValueError, match=r"max_length must be an int >= 2"):
        embed_prompts(folder, prompt_file, tmp_path, max_length=1)
    with pytest.raises(FileNotFoundError, match=r"missing' not found: pass a diffusers pipeline folder"):
        embed_prompts(tmp_path / "missing", prompt_file, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "text_encoder").mkdir()
    (broken / "tokenizer").mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "tokenizer": ["transformers", "NoSuchTokenizer"]}))
    with pytest.raises(ValueError, match=r"names 'NoSuchTokenizer' for tokenizer, which transformers .* does not provide"):
        embed_prompts(broken, prompt_file, tmp_path)
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "tokenizer": ["sentencepiece", "Foo"]}))
    with pytest.raises(ValueError, match=r"component 'tokenizer' must come from 'transformers', got 'sentencepiece'"):
        embed_prompts(broken, prompt_file, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no index.json in"):
        load_embeddings(tmp_path / "nothing")


def test_appended_prompts_reuse_full_shards(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False)
    before = _file_digests(tmp_path / "out")
    with prompt_file.open("a", encoding="utf-8") as handle:
        handle.write("a cyan cross moving down\n")

    written = []
    grown = embed_prompts(folder, prompt_file, tmp_path / "out", shard_size=2, progress=False,
                          on_shard_written=lambda number, path: written.append(number))
    assert written == [2]
    after = _file_digests(tmp_path / "out")
    kept = [name for name in before if name.startswith(("shard-00000", "shard-00001", "negative-"))]
    assert len(kept) == 3
    for name in kept:
        assert after[name] == before[name]
    assert grown.prompts == [*UNIQUE, "a cyan cross moving down"]


@pytest.mark.gpu
def test_cuda_matches_cpu(pipeline_folders, prompt_file, tmp_path):
    folder = pipeline_folders["wan"]
    on_cpu = embed_prompts(folder, prompt_file, tmp_path / "cpu", device="cpu", progress=False)
    on_cuda = embed_prompts(folder, prompt_file, tmp_path / "cuda", device="cuda", progress=False)
    assert on_cuda.index["cache_key"] == on_cpu.index["cache_key"]
    for position in range(len(on_cpu)):
        item = on_cuda[position]
        assert item["prompt_embeds"].device.type == "cpu"
        torch.testing.assert_close(item["prompt_embeds"], on_cpu[position]["prompt_embeds"], atol=1e-4, rtol=1e-4)
        assert torch.count_nonzero(item["prompt_embeds"][item["length"]:]) == 0
