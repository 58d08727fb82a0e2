"""Embed a prompt file with a pipeline's text encoder into a resumable safetensors cache."""

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from blade.prompts.encoder import PromptEncoder
from blade.prompts.prompt_file import prompt_sha256, read_prompt_file
from blade.prompts.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    NEGATIVE_PREFIX,
    SHARD_PREFIX,
    PromptEmbeddings,
    load_embeddings,
    read_metadata,
    remove_temporary_files,
    save_json_atomically,
    save_tensors_atomically,
)

logger = logging.getLogger(__name__)

# How many truncated prompts a log message lists before it only gives the count.
_MAX_LISTED = 3


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _file_is_current(path: Path, cache_key: str, hashes: list[str]) -> bool:
    metadata = read_metadata(path)
    return (
        metadata is not None
        and metadata.get("cache_key") == cache_key
        and metadata.get("prompt_sha256") == ",".join(hashes)
    )


def _encode_rows(
    encoder: PromptEncoder, prompts: list[str], batch_size: int, bar
) -> dict[str, torch.Tensor]:
    embeddings, lengths, truncated = [], [], []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        batch_embeddings, batch_lengths, batch_truncated = encoder.encode(batch)
        embeddings.append(batch_embeddings)
        lengths.append(batch_lengths)
        truncated.append(batch_truncated)
        if bar is not None:
            bar.update(len(batch))
    return {
        "embeddings": torch.cat(embeddings).contiguous(),  # [N, L, D]
        "lengths": torch.cat(lengths),  # [N]
        "truncated": torch.cat(truncated),  # [N]
    }


def _write_rows(path: Path, rows: dict[str, torch.Tensor], cache_key: str, hashes: list[str]) -> None:
    metadata = {"format": FORMAT_NAME, "cache_key": cache_key, "prompt_sha256": ",".join(hashes)}
    save_tensors_atomically(path, rows, metadata)


def _read_row_info(path: Path) -> tuple[list[int], list[bool], int]:
    with safe_open(str(path), framework="pt") as handle:
        lengths = handle.get_tensor("lengths").tolist()
        truncated = handle.get_tensor("truncated").tolist()
        hidden_size = handle.get_slice("embeddings").get_shape()[-1]
    return lengths, truncated, hidden_size


def embed_prompts(
    model: str | Path,
    prompts: str | Path,
    out_dir: str | Path,
    *,
    negative_prompt: str = "",
    batch_size: int = 16,
    shard_size: int = 256,
    max_length: int | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    padding: str = "zero",
    progress: bool = True,
    on_shard_written: Callable[[int, Path], None] | None = None,
) -> PromptEmbeddings:
    """Embed every unique prompt of a prompt file with a pipeline folder's text encoder.

    The unique prompts (see `read_prompt_file`) are split into shards of `shard_size` rows, each
    written atomically as safetensors, and index.json is written last. A file is named after a
    digest of the cache key and its prompts (for the negative file, its text). A rerun after an
    interruption therefore reuses every finished file without loading the encoder for it. After
    prompts are appended to the file, every full shard before them is reused too, while an insertion
    recomputes the shards from its position on. The cache key covers the weights and tokenizer
    files (SHA-256), the pipeline family, the encoder and tokenizer classes, `max_length`, `dtype`,
    `padding`, the text clean-up and `shard_size`. Files of other keys or prompts left in `out_dir`
    are deleted once the run finishes.

    Args:
        model: diffusers pipeline folder with model_index.json, text_encoder/ and tokenizer/ (Wan:
            UMT5, CogVideoX: T5, the toy teacher's own encoder).
        prompts: UTF-8 text file, one prompt per line; blank lines are skipped and duplicates kept once.
        out_dir: output folder, created if missing.
        negative_prompt: text of the negative embedding used for classifier-free guidance; the
            default "" is the empty-prompt embedding, the Wan pipeline's default negative.
        batch_size: prompts per encoder call.
        shard_size: rows per shard file; the unit of resumption.
        max_length: tokens per embedding. None takes the pipeline convention (Wan 512, CogVideoX
            226) or a smaller tokenizer `model_max_length`; see `PromptEncoder`.
        dtype: "float32", "bfloat16" or "float16": the encoder's and the stored dtype.
        device: device for the encoder; None picks "cuda" when available, else "cpu".
        padding: "zero" (masked encoding, rows past the prompt exactly zero) or "encoder" (unmasked
            encoding as in the CogVideoX pipeline); see `PromptEncoder`.
        progress: show a tqdm bar over the prompts being encoded.
        on_shard_written: called as `on_shard_written(shard_index, path)` after each shard written
            by this run (not for reused shards).

    Returns:
        The stored embeddings, opened with `load_embeddings(out_dir)`.

    Raises:
        FileNotFoundError: if `model` is not a pipeline folder or `prompts` does not exist.
        ValueError: on an empty, blank-only or non-UTF-8 prompt file, or an invalid argument.
    """
    batch_size = _positive_int("batch_size", batch_size)
    shard_size = _positive_int("shard_size", shard_size)
    if not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a str, got {type(negative_prompt).__name__}")
    prompt_list = read_prompt_file(prompts)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = PromptEncoder(model, max_length=max_length, dtype=dtype, device=device, padding=padding)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temporary_files(out_dir)

    key_fields = {
        **encoder.identity(),
        "encoder_sha256": encoder.fingerprint(),
        "shard_size": shard_size,
        "format_version": FORMAT_VERSION,
    }
    cache_key = _digest(json.dumps(key_fields, sort_keys=True, ensure_ascii=False))
    hashes = [prompt_sha256(prompt) for prompt in prompt_list.prompts]
    starts = range(0, len(hashes), shard_size)
    shard_paths = [
        out_dir / f"{SHARD_PREFIX}{number:05d}-{_digest(cache_key, *hashes[start : start + shard_size])[:16]}.safetensors"
        for number, start in enumerate(starts)
    ]
    negative_hashes = [prompt_sha256(negative_prompt)]
    negative_path = out_dir / f"{NEGATIVE_PREFIX}{_digest(cache_key, *negative_hashes)[:16]}.safetensors"

    pending = [
        number
        for number, start in enumerate(starts)
        if not _file_is_current(shard_paths[number], cache_key, hashes[start : start + shard_size])
    ]
    reused = len(shard_paths) - len(pending)
    to_encode = sum(len(hashes[starts[number] : starts[number] + shard_size]) for number in pending)
    logger.info(
        "%d unique prompts in %d shards: %d reused, %d to encode (%d prompts) with max_length %d (%s)",
        len(hashes), len(shard_paths), reused, len(pending), to_encode,
        encoder.max_length, encoder.max_length_source,
    )

    if not _file_is_current(negative_path, cache_key, negative_hashes):
        rows = _encode_rows(encoder, [negative_prompt], 1, None)
        _write_rows(negative_path, rows, cache_key, negative_hashes)
    with tqdm(total=to_encode, unit="prompt", desc="embed", disable=not progress) as bar:
        for number in pending:
            start = starts[number]
            rows = _encode_rows(encoder, prompt_list.prompts[start : start + shard_size], batch_size, bar)
            _write_rows(shard_paths[number], rows, cache_key, hashes[start : start + shard_size])
            logger.debug("wrote %s", shard_paths[number])
            if on_shard_written is not None:
                on_shard_written(number, shard_paths[number])

    index = _build_index(
        encoder, key_fields, cache_key, prompt_list, hashes, shard_paths, negative_prompt, negative_path
    )
    save_json_atomically(out_dir / INDEX_NAME, index)
    _remove_stale_files(out_dir, {path.name for path in [*shard_paths, negative_path]})
    _log_truncation(index, prompt_list.path)
    return load_embeddings(out_dir)


def _build_index(
    encoder, key_fields, cache_key, prompt_list, hashes, shard_paths, negative_prompt, negative_path
) -> dict:
    entries, shards, hidden_size = [], [], None
    shard_size = key_fields["shard_size"]
    for number, path in enumerate(shard_paths):
        lengths, truncated, hidden_size = _read_row_info(path)
        shards.append({"file": path.name, "rows": len(lengths)})
        for row, (length, was_truncated) in enumerate(zip(lengths, truncated)):
            position = number * shard_size + row
            entries.append(
                {
                    "text": prompt_list.prompts[position],
                    "sha256": hashes[position],
                    "line": prompt_list.lines[position],
                    "token_length": length,
                    "truncated": was_truncated,
                    "shard": number,
                    "row": row,
                }
            )
    negative_lengths, negative_truncated, _ = _read_row_info(negative_path)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "cache_key": cache_key,
        "key": key_fields,
        "model_path": str(encoder.model_path.resolve()),
        "max_length_source": encoder.max_length_source,
        "hidden_size": hidden_size,
        "source": {
            "path": str(prompt_list.path),
            "sha256": prompt_list.file_sha256,
            "unique_prompts": len(prompt_list.prompts),
            "duplicate_lines": [list(pair) for pair in prompt_list.duplicates],
        },
        "negative": {
            "text": negative_prompt,
            "file": negative_path.name,
            "token_length": negative_lengths[0],
            "truncated": negative_truncated[0],
        },
        "shards": shards,
        "prompts": entries,
    }


def _remove_stale_files(out_dir: Path, keep: set[str]) -> None:
    for pattern in (f"{SHARD_PREFIX}*.safetensors", f"{NEGATIVE_PREFIX}*.safetensors"):
        for path in out_dir.glob(pattern):
            if path.name not in keep:
                logger.info("removing %s, written under another cache key or prompt list", path.name)
                path.unlink()


def _log_truncation(index: dict, source: Path) -> None:
    truncated = [entry for entry in index["prompts"] if entry["truncated"]]
    if index["negative"]["truncated"]:
        logger.warning("the negative prompt was truncated to %d tokens", index["key"]["max_length"])
    if not truncated:
        return
    listed = ", ".join(f"line {entry['line']}" for entry in truncated[:_MAX_LISTED])
    more = f" and {len(truncated) - _MAX_LISTED} more" if len(truncated) > _MAX_LISTED else ""
    logger.warning(
        "%s: %d prompts truncated to %d tokens (%s%s)",
        source, len(truncated), index["key"]["max_length"], listed, more,
    )
