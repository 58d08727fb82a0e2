"""Worker of the two-process test: train from a JSON config, then dump this rank's student LoRA.

Run as `python -m accelerate.commands.launch --multi_gpu --num_processes 2 two_rank_worker.py CONFIG OUT`.
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from blade.distill import DistillConfig, train


def main(config_path: str, out: str) -> None:
    config = DistillConfig.from_dict(json.loads(Path(config_path).read_text()))
    accelerator = Accelerator(cpu=True, mixed_precision=config.mixed_precision)
    result = train(config, accelerator=accelerator)
    rank = accelerator.process_index
    save_file(result.student_lora, str(Path(out) / f"rank{rank}.safetensors"),
              metadata={"world_size": str(accelerator.num_processes), "backend": str(torch.distributed.get_backend())})


if __name__ == "__main__":
    main(*sys.argv[1:])
