"""The toy teacher: a small Wan2.1-architecture text-to-video pipeline built from a config.

The pipeline is a standard diffusers ``WanPipeline`` (``WanTransformer3DModel``, a tiny
``UMT5EncoderModel`` with a word-level ``PreTrainedTokenizerFast`` over the toy grammar's words, or
the file-free ``ByT5Tokenizer``, a small ``AutoencoderKLWan`` and ``FlowMatchEulerDiscreteScheduler``),
so a saved folder loads with ``WanPipeline.from_pretrained`` through the same code path as a real Wan
folder.

Tokenizer. Trained jointly from scratch, the text encoder has to find each attribute in the prompt.
With one token per word it gets each attribute as its own embedding, but with bytes it must first
learn to spell. In a side-by-side run of 200 steps at 17 x 32 x 32, swapping the colour word raised the
flow-matching loss at sigma 0.8 by 70% with words and by 7% with bytes.

Sizing (defaults). The VAE halves space and time (``dim_mult`` of length 2, one temporal
downsampling, ``scale_factor_temporal = scale_factor_spatial = 2``), so a 33 x 64 x 64 video has a
17 x 32 x 32 latent and, with Wan's (1, 2, 2) patches, 17 x 16 x 16 = 4,352 video tokens. Per token
and block, self-attention costs 4 L d flops (QK^T and PV). The linear layers cost
2 (4 d^2 + 2 d^2 + 2 d f) flops: self-attention q, k, v and o, cross-attention q and o, and the
feed-forward network. With d = 128 and f = 1024 that is 4 L d / (4 L d + 44 d^2) = L / (L + 11 d) = 0.76 at
L = 4,352, and 0.75 once cross-attention over the 64 text tokens is counted, close to Wan2.1-1.3B at
480p. ``attention_flop_share`` computes the number.
``num_frames - 1`` must be a multiple of 4, because ``AutoencoderKLWan`` encodes frames after the
first in chunks of 4. ``WanPipeline`` (diffusers 0.42) requires height and width divisible by 16;
training stages only need multiples of 4 (VAE factor 2 times patch 2).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blade.io import apply_default_permissions

logger = logging.getLogger(__name__)


TOKENIZERS = ("word", "byte")
# ByT5's vocabulary: 3 special tokens, 256 byte values and 125 sentinel ids.
_BYTE_VOCAB_SIZE = 384


def toy_word_tokenizer(text_len: int):
    """Build a word-level tokenizer for the toy grammar offline, with no vocabulary download.

    Ids follow T5's convention: 0 is padding, 1 the end of text and 2 unknown. The words "a", "moving"
    and every colour, shape and direction get ids 3 and up. Text is lower-cased and split on
    whitespace. Any other word becomes the unknown token, so a prompt outside the grammar still encodes.

    Returns:
        a ``transformers.PreTrainedTokenizerFast`` that appends the end token and declares
        ``model_max_length = text_len``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from blade.toy.prompts import COLOURS, DIRECTIONS, SHAPES

    words = ["a", "moving", *COLOURS, *SHAPES, *DIRECTIONS]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {word: index + 3 for index, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=text_len
    )


@dataclass(frozen=True)
class TrainStage:
    """One training phase at a fixed video size.

    Attributes:
        num_frames: frames per training clip (``num_frames - 1`` a multiple of 4).
        height, width: frame size in pixels (multiples of 4).
        batch_size: clips per optimizer step.
        steps: optimizer steps in this stage.
    """

    num_frames: int
    height: int
    width: int
    batch_size: int
    steps: int


@dataclass(frozen=True)
class ToyTeacherConfig:
    """Architecture, video size and training recipe of the toy teacher (saved with every checkpoint).

    Attributes:
        seed: seeds weight initialisation and every training draw (data, noise, timesteps, dropout).
        num_layers, num_heads, head_dim, ffn_dim: ``WanTransformer3DModel`` size; hidden size is
            ``num_heads * head_dim``.
        text_dim, text_layers, text_heads, text_ffn_dim: tiny ``UMT5EncoderModel`` size.
        text_len: token length of prompt embeddings (``max_sequence_length`` for the pipeline). Toy
            prompts are 5 words (at most 31 bytes) plus the end token.
        tokenizer: "word" (one token per word of the toy grammar, ``toy_word_tokenizer``) or "byte"
            (``ByT5Tokenizer``). The encoder keeps ByT5's 384-entry embedding table either way, so
            the seeded initial weights of every module are the same for both.
        latent_channels, vae_base_dim: ``AutoencoderKLWan`` ``z_dim`` and ``base_dim``.
        num_frames, height, width: the generation size the README and evaluation use (height and
            width multiples of 16).
        shift: flow-matching timestep shift of the scheduler (Wan2.1 at 480p uses 3).
        caption_dropout: probability of training on the empty prompt, for classifier-free guidance.
        lr, warmup_steps, min_lr_ratio: AdamW learning rate, linear warm-up, cosine floor.
        vae_steps, vae_batch_size, vae_lr, vae_kl_weight: VAE training.
        stages: transformer training stages, small videos first.
        log_every, checkpoint_every: steps between loss lines and between checkpoints.
    """

    seed: int = 0
    num_layers: int = 4
    num_heads: int = 2
    head_dim: int = 64
    ffn_dim: int = 1024
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 2
    text_ffn_dim: int = 256
    text_len: int = 64
    tokenizer: str = "byte"
    latent_channels: int = 4
    vae_base_dim: int = 16
    num_frames: int = 33
    height: int = 64
    width: int = 64
    shift: float = 3.0
    caption_dropout: float = 0.1
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    vae_steps: int = 1500
    vae_batch_size: int = 4
    vae_lr: float = 5e-3
    vae_kl_weight: float = 1e-6
    stages: tuple[TrainStage, ...] = field(
        default_factory=lambda: (
            TrainStage(num_frames=17, height=32, width=32, batch_size=16, steps=1500),
            TrainStage(num_frames=17, height=64, width=64, batch_size=4, steps=500),
            TrainStage(num_frames=33, height=64, width=64, batch_size=2, steps=300),
        )
    )
    log_every: int = 25
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.num_frames < 1 or (self.num_frames - 1) % 4 != 0:
            raise ValueError(f"num_frames must be 4 k + 1 (AutoencoderKLWan encodes 4-frame chunks), got {self.num_frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(
                f"height and width must be multiples of 16 (WanPipeline checks this), got {self.height} x {self.width}"
            )
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"invalid tokenizer {self.tokenizer!r}: set it to one of {TOKENIZERS}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        for stage in self.stages:
            if (stage.num_frames - 1) % 4 or stage.height % 4 or stage.width % 4:
                raise ValueError(f"stage {stage} needs num_frames = 4 k + 1 and height, width multiples of 4")

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def transformer_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ToyTeacherConfig":
        values = dict(values)
        values["stages"] = tuple(TrainStage(**s) for s in values.get("stages", ()))
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ToyTeacherConfig fields {sorted(unknown)}; remove them or update blade")
        return cls(**values)


def video_tokens(config: ToyTeacherConfig, num_frames: int, height: int, width: int) -> int:
    """Number of transformer video tokens for a video of the given pixel size."""
    latent_frames = (num_frames - 1) // 2 + 1
    return latent_frames * (height // 4) * (width // 4)


def attention_flop_share(config: ToyTeacherConfig, num_tokens: int, text_len: int | None = None) -> float:
    """Estimate the share of self-attention in the transformer blocks' forward flops.

    Counts, per video token and block, 4 L d flops of self-attention (QK^T and PV) against
    2 (4 d^2 + 2 d^2 + 2 d f) flops of linear layers plus 4 text_len d flops of cross-attention.
    Norms, modulation, the projection of text keys and values and the patch embedding are left out.
    """
    d, f = config.hidden_size, config.ffn_dim
    text_len = config.text_len if text_len is None else text_len
    self_attention = 4 * num_tokens * d
    other = 2 * (6 * d * d + 2 * d * f) + 4 * text_len * d
    return self_attention / (self_attention + other)


def build_pipeline(config: ToyTeacherConfig):
    """Build the untrained toy ``WanPipeline`` with weights seeded by ``config.seed``.

    Returns:
        A float32 ``diffusers.WanPipeline`` on the CPU.
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=config.num_heads,
            attention_head_dim=config.head_dim,
            in_channels=config.latent_channels,
            out_channels=config.latent_channels,
            text_dim=config.text_dim,
            freq_dim=256,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=_BYTE_VOCAB_SIZE,  # also for word tokens, which use ids 0-18
                d_model=config.text_dim,
                d_kv=config.text_dim // config.text_heads,
                d_ff=config.text_ffn_dim,
                num_layers=config.text_layers,
                num_heads=config.text_heads,
                dropout_rate=0.0,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
            )
        )
        vae = AutoencoderKLWan(
            base_dim=config.vae_base_dim,
            z_dim=config.latent_channels,
            dim_mult=[1, 2],
            num_res_blocks=1,
            temperal_downsample=[True],
            scale_factor_temporal=2,
            scale_factor_spatial=2,
            latents_mean=[0.0] * config.latent_channels,
            latents_std=[1.0] * config.latent_channels,
        )
    if config.tokenizer == "word":
        tokenizer = toy_word_tokenizer(config.text_len)
    else:
        tokenizer = ByT5Tokenizer(model_max_length=config.text_len)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=config.shift)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def save_pipeline(pipeline, config: ToyTeacherConfig, directory: str | os.PathLike) -> Path:
    """Save ``pipeline`` as a diffusers folder plus ``toy_teacher_config.json``, atomically.

    The folder is written next to ``directory`` under a temporary name and renamed into place, so a
    reader never sees half a folder. An existing folder is replaced.

    Returns:
        The folder path.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    pipeline.save_pretrained(staging, safe_serialization=True)
    (staging / "toy_teacher_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    apply_default_permissions(staging)
    if directory.exists():
        retired = directory.with_name(f".{directory.name}-old")
        if retired.exists():
            _remove_tree(retired)
        os.replace(directory, retired)
        os.replace(staging, directory)
        _remove_tree(retired)
    else:
        os.replace(staging, directory)
    size_mb = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20
    logger.info("saved toy teacher pipeline to %s (%.1f MB)", directory, size_mb)
    return directory


def load_config(directory: str | os.PathLike) -> ToyTeacherConfig:
    """Read ``toy_teacher_config.json`` from a saved toy pipeline or training run folder."""
    path = Path(directory) / "toy_teacher_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {directory} a toy teacher folder written by blade?")
    return ToyTeacherConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
