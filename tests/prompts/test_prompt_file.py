import logging

import pytest

from blade.prompts import read_prompt_file
from blade.prompts.prompt_file import prompt_sha256


def test_blank_lines_skipped_and_whitespace_stripped(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbfa red circle\r\n\n   \n  a blue square moving up \t\nlast line without newline")
    prompts = read_prompt_file(path)
    assert prompts.prompts == ["a red circle", "a blue square moving up", "last line without newline"]
    assert prompts.lines == [1, 4, 5]
    assert prompts.duplicates == []


def test_duplicates_reported_and_kept_once(tmp_path, caplog):
    path = tmp_path / "prompts.txt"
    path.write_text("one\ntwo\none\n\n two \nthree\none\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="blade.prompts.prompt_file"):
        prompts = read_prompt_file(path)
    assert prompts.prompts == ["one", "two", "three"]
    assert prompts.duplicates == [(3, 1), (5, 2), (7, 1)]
    assert "3 duplicate prompt lines" in caplog.text
    assert "line 5 repeats line 2" in caplog.text


def test_non_ascii_prompts_round_trip(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("一只红色的圆 moving left\ncafé crème\n", encoding="utf-8")
    assert read_prompt_file(path).prompts == ["一只红色的圆 moving left", "café crème"]


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.txt' is empty: expected UTF-8 text"):
        read_prompt_file(path)


def test_blank_only_file_rejected(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank\.txt' contains only blank lines \(4 lines read\)"):
        read_prompt_file(path)


def test_invalid_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\n\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt', line 3: invalid UTF-8 at byte 3 .*re-save the file as UTF-8"):
        read_prompt_file(path)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.txt' not found"):
        read_prompt_file(tmp_path / "nowhere.txt")


def test_prompt_sha256_matches_hashlib():
    # Known SHA-256 of the UTF-8 bytes of "abc" (FIPS 180-2 test vector).
    assert prompt_sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
