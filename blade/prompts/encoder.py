"""Load a pipeline folder's text encoder and tokenizer, and encode prompts the way its pipeline does."""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger(__name__)

# Tokenizers without a length limit report this sentinel (transformers' VERY_LARGE_INTEGER is 1e30).
_UNBOUNDED_LENGTH = 1_000_000

PADDING_MODES = ("zero", "encoder")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PipelineFamily:
    """Text conventions of a pipeline family: length, clean-up and masking.

    Attributes:
        name: "wan", "cogvideox" or "other".
        max_length: the pipeline's default `max_sequence_length`, or None when the tokenizer decides.
        clean_text: the pipeline's own text clean-up, applied before tokenizing, or None.
        masked_encoding: whether the pipeline passes the attention mask to the encoder.
    """

    name: str
    max_length: int | None
    clean_text: Callable[[str], str] | None
    masked_encoding: bool


def _wan_prompt_clean(text: str) -> str:
    # The Wan pipeline unescapes HTML, fixes mojibake when ftfy is installed and collapses whitespace
    # before tokenizing. Calling its own function keeps cached embeddings equal to the pipeline's.
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean(text)


def detect_family(pipeline_class: str) -> PipelineFamily:
    """Return the text conventions of a diffusers pipeline class (the `_class_name` of model_index.json).

    Wan pipelines (diffusers 0.42 `WanPipeline._get_t5_prompt_embeds`) encode 512 UMT5 tokens with
    the attention mask after `prompt_clean`; CogVideoX pipelines encode 226 T5 tokens without a mask
    and without clean-up. Any other class is "other": no clean-up, masked encoding, and the length
    comes from the tokenizer or the encoder config.
    """
    if pipeline_class.startswith("Wan"):
        return PipelineFamily("wan", 512, _wan_prompt_clean, masked_encoding=True)
    if pipeline_class.startswith("CogVideoX"):
        return PipelineFamily("cogvideox", 226, None, masked_encoding=False)
    return PipelineFamily("other", None, None, masked_encoding=True)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Return the torch dtype for a name in `DTYPES` or a torch dtype among its values."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def fingerprint_folders(folders: list[Path]) -> str:
    """Return a hex SHA-256 over every file's relative path and bytes in `folders`, in sorted order.

    NOTE: this reads every weight file, about 15 s per 10 GB at 1 GB/s (an estimate), which is what a
    key that changes with any weight costs.
    """
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder.parent)).encode("utf-8") + b"\0")
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _load_class(class_name: str, component: str):
    import transformers

    loaded = getattr(transformers, class_name, None)
    if loaded is None:
        raise ValueError(
            f"model_index.json names {class_name!r} for {component}, which transformers "
            f"{transformers.__version__} does not provide: fix the class name in model_index.json"
        )
    return loaded


def _transformers_class(model_index: dict, component: str, default: str) -> str:
    entry = model_index.get(component)
    if entry is None:
        return default
    library, class_name = entry
    if library != "transformers":
        raise ValueError(
            f"model_index.json component {component!r} must come from 'transformers', got {library!r}: "
            "blade embeds with transformers text encoders only"
        )
    return class_name


class PromptEncoder:
    """The text encoder and tokenizer of a diffusers pipeline folder.

    Only the `text_encoder/` and `tokenizer/` subfolders are loaded, with transformers'
    `from_pretrained` (safetensors weights only). The encoder itself is loaded on the first
    `encode` call, so a run whose embeddings are all cached never pays for it.

    Args:
        model_path: pipeline folder with model_index.json, text_encoder/ and tokenizer/.
        max_length: tokens per embedding. None takes the family's convention (Wan 512, CogVideoX
            226) unless the tokenizer declares a smaller `model_max_length`, which then wins. Other
            families take the tokenizer's `model_max_length`, else the encoder config's
            `n_positions` / `max_position_embeddings`.
        dtype: dtype the encoder runs in and the embeddings are returned in.
        device: device the encoder runs on.
        padding: "zero" runs the encoder with the attention mask and sets every position past the
            prompt to exactly zero, as the Wan pipeline does. "encoder" runs it without a mask and
            keeps the outputs at pad positions, as the CogVideoX pipeline does.
    """

    def __init__(
        self,
        model_path: str | Path,
        max_length: int | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        padding: str = "zero",
    ):
        self.model_path = Path(model_path)
        index_path = self.model_path / "model_index.json"
        if not self.model_path.is_dir():
            raise FileNotFoundError(
                f"model folder {str(self.model_path)!r} not found: pass a diffusers pipeline folder "
                "(model_index.json, text_encoder/, tokenizer/)"
            )
        if not index_path.is_file():
            raise FileNotFoundError(
                f"model folder {str(self.model_path)!r} has no model_index.json: pass a diffusers pipeline "
                "folder (model_index.json, text_encoder/, tokenizer/)"
            )
        for sub in ("text_encoder", "tokenizer"):
            if not (self.model_path / sub).is_dir():
                raise FileNotFoundError(f"model folder {str(self.model_path)!r} has no {sub}/ subfolder")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")

        self.model_index = json.loads(index_path.read_text(encoding="utf-8"))
        self.pipeline_class = str(self.model_index.get("_class_name", ""))
        self.family = detect_family(self.pipeline_class)
        self.text_encoder_class = _transformers_class(self.model_index, "text_encoder", "AutoModel")
        self.tokenizer_class = _transformers_class(self.model_index, "tokenizer", "AutoTokenizer")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.padding = padding
        if self.family.name == "cogvideox" and padding == "zero":
            logger.warning(
                "padding 'zero' requested for a %s folder; its pipeline encodes without an attention mask "
                "and keeps pad-token outputs ('encoder'); using 'zero' as requested",
                self.pipeline_class,
            )

        from transformers import AutoConfig

        tokenizer_type = _load_class(self.tokenizer_class, "tokenizer")
        self.tokenizer = tokenizer_type.from_pretrained(self.model_path / "tokenizer")
        self.encoder_config = AutoConfig.from_pretrained(self.model_path / "text_encoder")
        self.max_length, self.max_length_source = self._resolve_max_length(max_length)
        self._encoder = None

    def _resolve_max_length(self, requested: int | None) -> tuple[int, str]:
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int) or requested < 2:
                raise ValueError(f"max_length must be an int >= 2 (room for a token and EOS), got {requested!r}")
            return requested, "argument"
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None)
        if not (isinstance(tokenizer_max, int) and 2 <= tokenizer_max < _UNBOUNDED_LENGTH):
            tokenizer_max = None
        if self.family.max_length is not None:
            # A folder whose tokenizer declares a shorter limit was built to run at that length, as
            # the toy teacher's WanPipeline with ByT5Tokenizer(model_max_length=text_len) is.
            if tokenizer_max is not None and tokenizer_max < self.family.max_length:
                return tokenizer_max, "tokenizer model_max_length, below the pipeline convention"
            return self.family.max_length, f"{self.family.name} pipeline convention"
        if tokenizer_max is not None:
            return tokenizer_max, "tokenizer model_max_length"
        for name in ("n_positions", "max_position_embeddings"):
            value = getattr(self.encoder_config, name, None)
            if isinstance(value, int) and value >= 2:
                return value, f"text encoder config {name}"
        raise ValueError(
            f"cannot infer max_length for {str(self.model_path)!r} (pipeline class {self.pipeline_class!r}): "
            "the tokenizer sets no model_max_length and the encoder config no n_positions; pass max_length"
        )

    def fingerprint(self) -> str:
        """Return the hex SHA-256 of the text_encoder/ and tokenizer/ files (see `fingerprint_folders`)."""
        return fingerprint_folders([self.model_path / "text_encoder", self.model_path / "tokenizer"])

    def identity(self) -> dict:
        """Return everything besides the weights that decides the embeddings, as JSON-ready values."""
        return {
            "pipeline_class": self.pipeline_class,
            "family": self.family.name,
            "text_encoder_class": self.text_encoder_class,
            "tokenizer_class": self.tokenizer_class,
            "max_length": self.max_length,
            "dtype": str(self.dtype).removeprefix("torch."),
            "padding": self.padding,
            "masked_encoding": self.padding == "zero",
            "text_clean": "wan prompt_clean" if self.family.clean_text is not None else "none",
        }

    @property
    def encoder(self) -> torch.nn.Module:
        """The text encoder, loaded on first use in `dtype` on `device`, in eval mode."""
        if self._encoder is None:
            encoder_type = _load_class(self.text_encoder_class, "text_encoder")
            logger.info("loading %s from %s", self.text_encoder_class, self.model_path / "text_encoder")
            self._encoder = encoder_type.from_pretrained(
                self.model_path / "text_encoder", dtype=self.dtype, use_safetensors=True
            )
            self._encoder.to(self.device).eval()
        return self._encoder

    def clean(self, prompts: list[str]) -> list[str]:
        """Apply the family's text clean-up (Wan's `prompt_clean`), or return the prompts unchanged."""
        if self.family.clean_text is None:
            return list(prompts)
        return [self.family.clean_text(prompt) for prompt in prompts]

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokenize cleaned prompts to the fixed length.

        Returns:
            input_ids `[B, max_length]` int64, attention_mask `[B, max_length]` int64 (1 on prompt
            tokens including EOS), and untruncated_lengths `[B]` int64, the token count before
            truncation (longer than `max_length` means the prompt was truncated).
        """
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        full = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        untruncated = torch.tensor([len(ids) for ids in full], dtype=torch.int64)
        return batch["input_ids"], batch["attention_mask"], untruncated

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode raw prompts (cleaned here) to fixed-length embeddings.

        Args:
            prompts: B prompt strings.

        Returns:
            embeddings `[B, max_length, D]` in `dtype` on the CPU; with padding "zero" every row past
            the prompt's token length is exactly zero. lengths `[B]` int64, tokens kept including EOS.
            truncated `[B]` bool, whether the prompt had more than `max_length` tokens.
        """
        input_ids, mask, untruncated = self.tokenize(self.clean(prompts))
        lengths = mask.sum(dim=1)  # [B]
        encoder_mask = mask.to(self.device) if self.padding == "zero" else None
        hidden = self.encoder(input_ids.to(self.device), attention_mask=encoder_mask).last_hidden_state
        hidden = hidden.to(dtype=self.dtype, device="cpu")  # [B, L, D]
        if self.padding == "zero":
            positions = torch.arange(self.max_length)  # [L]
            keep = positions[None, :] < lengths[:, None]  # [B, L]
            hidden = torch.where(keep[:, :, None], hidden, torch.zeros((), dtype=hidden.dtype))
        return hidden, lengths, untruncated > self.max_length
