import json

import pytest

from blade.models import saved_video_size


def test_saved_video_size_reads_toy_config(tmp_path):
    (tmp_path / "toy_teacher_config.json").write_text(json.dumps({"height": 64, "width": 48, "num_frames": 33, "seed": 0}))
    assert saved_video_size(tmp_path) == (64, 48, 33)


def test_saved_video_size_without_file(tmp_path):
    assert saved_video_size(tmp_path) is None


def test_saved_video_size_rejects_incomplete_file(tmp_path):
    (tmp_path / "toy_teacher_config.json").write_text(json.dumps({"height": 64, "width": 48}))
    with pytest.raises(ValueError, match="integer height, width and num_frames .*re-export the toy teacher"):
        saved_video_size(tmp_path)
