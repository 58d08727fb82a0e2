"""The distillation loop on the tiny Wan teacher: outputs, exact resume, the guard, the CLI."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from blade.cli import main as cli_main
from blade.distill import checkpoints, load_lora, train
from blade.distill import loop as loop_module
from blade.models import tiny_transformer_inputs, tiny_wan_pipeline
from blade import apply_blade
from tests.distill.conftest import tiny_config


def _losses(rows):
    return [(row["step"], row["loss_fake"], row["loss_student"]) for row in rows]


def test_resume_after_a_crash_continues_exactly(wan_embeddings, tmp_path, monkeypatch):
    """Losses after resuming must equal the uninterrupted run's: LoRAs, optimizers, schedulers, RNG and data order."""
    settings = dict(gradient_accumulation_steps=2, gradient_checkpointing=True, fake_loss_threshold=1.9)
    reference = train(tiny_config(wan_embeddings, tmp_path / "reference", **settings))
    assert [row["step"] for row in reference.metrics] == [1, 2, 3, 4]
    assert torch.isfinite(torch.tensor(_losses(reference.metrics))).all()

    original_save = loop_module._Trainer.save

    def save_then_crash(trainer, root):
        path = original_save(trainer, root)
        if trainer.step == 2:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")
        return path

    config = tiny_config(wan_embeddings, tmp_path / "resumed", **settings)
    monkeypatch.setattr(loop_module._Trainer, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(loop_module._Trainer, "save", original_save)
    resumed = train(config, resume=True)

    assert _losses(resumed.metrics) == _losses(reference.metrics)[2:]
    assert resumed.fake_skipped == reference.fake_skipped
    assert resumed.student_lora.keys() == reference.student_lora.keys()
    assert all(torch.equal(resumed.student_lora[k], reference.student_lora[k]) for k in reference.student_lora)
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert _losses(rows) == _losses(reference.metrics)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [
        "checkpoint-0000002", "checkpoint-0000004"
    ]


def test_resume_rejects_changed_settings(wan_embeddings, tmp_path):
    train(tiny_config(wan_embeddings, tmp_path, max_train_steps=2))
    with pytest.raises(ValueError, match=r"other settings for \['eta'\]"):
        train(tiny_config(wan_embeddings, tmp_path, max_train_steps=3, eta=0.5), resume=True)


def test_guard_skips_every_abnormal_fake_update(wan_embeddings, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="blade.distill.loop")
    result = train(tiny_config(wan_embeddings, tmp_path, max_train_steps=2, fake_loss_threshold=1e-6))
    assert "training on 1 process(es), device cpu, process group backend none" in caplog.text
    assert result.fake_skipped == 2
    assert [row["fake_updates_kept"] for row in result.metrics] == [0, 0]
    tensors = load_file(str(checkpoints.latest_checkpoint(tmp_path / "checkpoints") / "state.safetensors"))
    fake_b = [t for name, t in tensors.items() if name.startswith("lora.fake.") and t.abs().sum() == 0]
    student_b_moved = [t for name, t in tensors.items() if name.startswith("lora.student.")]
    # lora_B starts at zero: an untouched fake adapter still has half its tensors zero.
    assert len(fake_b) == len(student_b_moved) // 2
    assert any(t.abs().sum() > 0 for t in student_b_moved[1::2])


def test_cli_trains_and_the_student_lora_loads_into_a_patched_pipeline(wan_embeddings, tmp_path):
    # the file sets 5 steps, and --set overrides it with 2
    config = tiny_config(wan_embeddings, tmp_path / "run", max_train_steps=5, mixed_precision="bf16").to_dict()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    assert cli_main(["distill", "--config", str(config_path), "--set", "max_train_steps=2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_train_steps"] == 2

    pipeline = tiny_wan_pipeline(seed=0)
    inputs = tiny_transformer_inputs(pipeline, batch_size=1, latent_frames=3, latent_height=6, latent_width=10)
    apply_blade(pipeline.transformer, tiny_config(wan_embeddings, tmp_path).blade_config())
    with torch.no_grad():
        before = pipeline.transformer(**inputs)[0]
        assert load_lora(pipeline, tmp_path / "run") == 16
        after = pipeline.transformer(**inputs)[0]
    assert not torch.allclose(before, after, atol=1e-6)


def test_cli_rejects_a_bad_config(wan_embeddings, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_step: 8\n")
    assert cli_main(["distill", "--config", str(bad)]) == 2
    good = tmp_path / "good.json"
    good.write_text(json.dumps(tiny_config(wan_embeddings, tmp_path / "run").to_dict()))
    assert cli_main(["distill", "--config", str(good), "--set", "num_step=4"]) == 2
    assert "unknown distillation settings ['num_step']" in caplog.text
    assert cli_main(["distill", "--config", str(good), "--set", "num_steps"]) == 2
    assert "invalid --set item 'num_steps'" in caplog.text
    assert not (tmp_path / "run").exists()


def test_cogvideox_v_prediction_run_with_the_teacher_term(wan_embeddings, tmp_path):
    """CogVideoX path: [B, F, C, H, W] layout, 3D rotary embedding, DDPM v-prediction, lambda_reg 0.5."""
    config = tiny_config(
        wan_embeddings, tmp_path, model="tiny-cogvideox", latent_shape=(4, 3, 6, 10), max_train_steps=2,
        lambda_reg=0.5, guidance_scale=6.0,
        blade={"preset": "cogvideox", "block_size": 8, "samples_per_block": 4, "max_ratio": 0.5, "pool_group": 4},
    )
    result = train(config)
    assert [row["step"] for row in result.metrics] == [1, 2]
    assert torch.isfinite(torch.tensor([[row["loss_fake"], row["loss_student"]] for row in result.metrics])).all()
    assert any(value.abs().sum() > 0 for key, value in result.student_lora.items() if "lora_B" in key)


def test_teacher_cfg_matches_two_calls_of_the_unpatched_model(wan_embeddings, tmp_path):
    from accelerate import Accelerator

    from blade.distill.schedules import FlowMatchSchedule

    trainer = loop_module._Trainer(tiny_config(wan_embeddings, tmp_path), Accelerator(cpu=True, mixed_precision="no"))
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 4, 3, 6, 10, generator=generator)
    t = torch.tensor([17, 801])
    batch = next(trainer.batches.iterate())
    embeds = batch["prompt_embeds"]
    guided = trainer.teacher_x0(x_t, t, embeds, guidance=True)

    reference = tiny_wan_pipeline(seed=0).transformer  # unpatched, no adapters
    schedule = FlowMatchSchedule(3.0)
    timestep = schedule.model_timestep(t)
    with torch.no_grad():
        cond = reference(hidden_states=x_t, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        negative = trainer.dataset.negative_embeds.expand_as(embeds)
        uncond = reference(hidden_states=x_t, timestep=timestep, encoder_hidden_states=negative, return_dict=False)[0]
    velocity = uncond + 5.0 * (cond - uncond)
    sigma = schedule.coefficients(t)[1].float().reshape(2, 1, 1, 1, 1)
    torch.testing.assert_close(guided, x_t - sigma * velocity, rtol=0, atol=1e-5)


def test_gradient_checkpointing_changes_nothing(wan_embeddings, tmp_path):
    """Recomputation in backward runs under the student role; a wrong adapter there would change the LoRA."""
    plain = train(tiny_config(wan_embeddings, tmp_path / "plain", max_train_steps=2, checkpoint_every=0))
    recomputed = train(tiny_config(wan_embeddings, tmp_path / "ckpt", max_train_steps=2, checkpoint_every=0,
                                   gradient_checkpointing=True))
    for key, value in plain.student_lora.items():
        torch.testing.assert_close(recomputed.student_lora[key], value, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(_losses(recomputed.metrics)), torch.tensor(_losses(plain.metrics)),
                               rtol=0, atol=1e-6)
