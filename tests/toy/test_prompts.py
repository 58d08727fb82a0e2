import itertools
import stat

import pytest

from blade.toy.prompts import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    ToyPrompt,
    all_prompts,
    demo_prompts,
    heldout_prompts,
    parse_prompt,
    read_prompt_list,
    train_prompts,
    write_prompt_lists,
)


def test_grammar_enumerates_every_combination():
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) == len(COLOURS) * len(SHAPES) * len(DIRECTIONS)
    assert all(parse_prompt(p.text) == p for p in prompts)


def test_heldout_is_compositional():
    train, heldout = train_prompts(), heldout_prompts()
    assert len(heldout) == 12
    assert not set(train) & set(heldout)
    assert set(train) | set(heldout) == set(all_prompts())
    for first, second in itertools.combinations(("colour", "shape", "direction"), 2):
        train_pairs = {(getattr(p, first), getattr(p, second)) for p in train}
        for p in heldout:
            assert (getattr(p, first), getattr(p, second)) in train_pairs, (p, first, second)


def test_demo_prompts_cover_all_values():
    demo = demo_prompts()
    assert set(demo) <= set(train_prompts())
    assert {p.colour for p in demo} == set(COLOURS)
    assert {p.shape for p in demo} == set(SHAPES)
    assert {p.direction for p in demo} == set(DIRECTIONS)


def test_shipped_lists_match_grammar(tmp_path):
    written = write_prompt_lists(tmp_path)
    for name, path in written.items():
        shipped = f"data/prompts/{name}.txt"
        with open(shipped, encoding="utf-8") as f:
            assert f.read() == path.read_text(encoding="utf-8"), f"{shipped} is stale; rerun write_prompt_lists"
    assert read_prompt_list(written["heldout"]) == heldout_prompts()


def test_prompt_lists_get_umask_permissions(tmp_path, umask_022):
    """Under umask 022 the lists are 0644, readable by other users, not private like a mkstemp file."""
    written = write_prompt_lists(tmp_path)
    assert {stat.S_IMODE(path.stat().st_mode) for path in written.values()} == {0o644}

    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.txt", "heldout.txt", "train.txt"]


def test_bad_prompts_raise(tmp_path):
    with pytest.raises(ValueError, match="does not follow the toy grammar"):
        parse_prompt("a red circle")
    with pytest.raises(ValueError, match="colour must be one of"):
        parse_prompt("a purple circle moving left")
    with pytest.raises(ValueError, match="direction must be one of"):
        ToyPrompt("red", "circle", "sideways")
    bad = tmp_path / "bad.txt"
    bad.write_text("a red circle moving left\n\na red blob moving up\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:3"):
        read_prompt_list(bad)


def test_eval_splits_are_balanced():
    from collections import Counter

    from blade.toy.evaluate import default_eval_prompts

    splits = default_eval_prompts()
    heldin = splits["heldin"]
    assert set(heldin) <= set(train_prompts())
    assert splits["heldout"] == heldout_prompts()
    assert Counter(p.direction for p in heldin) == {d: 6 for d in DIRECTIONS}
    assert Counter(p.shape for p in heldin) == {s: 6 for s in SHAPES}
    assert Counter(p.colour for p in heldin) == {c: 4 for c in COLOURS}
