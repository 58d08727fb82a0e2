"""Two CPU processes (gloo) train together and end with identical LoRA weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.distill.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_end_identical(wan_embeddings, tmp_path):
    config = tiny_config(wan_embeddings, tmp_path / "run", max_train_steps=2, batch_size=2, checkpoint_every=0)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    # Without GPUs, accelerate 1.16 starts several local processes only with --multi_gpu, and they run on
    # CPU with gloo. With --cpu in its place it silently starts one process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "tests" / "distill" / "two_rank_worker.py"), str(config_path), str(tmp_path)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-4000:]

    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    for r in range(2):
        with safe_open(str(tmp_path / f"rank{r}.safetensors"), framework="pt") as handle:
            assert handle.metadata() == {"world_size": "2", "backend": "gloo"}
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) == 32
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    # Training moved the student: lora_B left zero.
    assert any(ranks[0][key].abs().sum() > 0 for key in ranks[0] if "lora_B" in key)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
