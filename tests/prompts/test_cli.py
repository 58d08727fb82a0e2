import logging

from blade.cli import main
from blade.prompts import load_embeddings


def test_embed_command_round_trip(pipeline_folders, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\na red circle moving left\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main([
        "embed", "--model", str(pipeline_folders["cogvideox"]), "--prompts", str(prompts), "--out", str(out),
        "--negative", "low quality", "--batch-size", "1", "--max-length", "19", "--no-progress",
    ])
    assert code == 0
    stored = load_embeddings(out)
    assert stored.prompts == ["a red circle moving left", "a blue square moving up"]
    assert stored.negative_prompt == "low quality"
    assert stored[1]["prompt_embeds"].shape == (19, 24)


def test_embed_command_reports_bad_file(pipeline_folders, tmp_path, caplog):
    prompts = tmp_path / "bad.txt"
    prompts.write_bytes(b"ok\n\xff\xfe broken\n")
    with caplog.at_level(logging.ERROR, logger="blade.cli.embed"):
        code = main(["embed", "--model", str(pipeline_folders["wan"]), "--prompts", str(prompts), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "bad.txt', line 2: invalid UTF-8 at byte 0" in caplog.text


def test_public_names_exported():
    import blade
    import blade.prompts

    assert blade.load_embeddings is load_embeddings
    assert blade.embed_prompts is blade.prompts.embed_prompts
