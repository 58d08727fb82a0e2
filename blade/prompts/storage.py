"""On-disk layout of prompt embeddings: safetensors shards, a negative embedding and index.json.

A folder written by `embed_prompts` contains:
    index.json                          prompts, their shard and row, and the cache key fields
    shard-00000-<digest>.safetensors    embeddings [N, L, D], lengths [N] int64, truncated [N] bool
    negative-<digest>.safetensors       the same tensors for the negative (default empty) prompt

Each file carries the run's cache key and its prompts' SHA-256 in its safetensors metadata, so a
file is reused only by a run with the same key and the same prompts.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from blade.io import atomic_write

INDEX_NAME = "index.json"
FORMAT_NAME = "blade-prompt-embeddings"
FORMAT_VERSION = 1
SHARD_PREFIX = "shard-"
NEGATIVE_PREFIX = "negative-"
_TEMP_SUFFIX = ".tmp"


def save_tensors_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save `tensors` with string `metadata` as a safetensors file at `path` by atomic rename."""
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def save_json_atomically(path: Path, value: dict) -> None:
    """Save `value` as indented UTF-8 JSON at `path` by atomic rename."""
    text = json.dumps(value, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def remove_temporary_files(folder: Path) -> None:
    """Delete temporary files that an interrupted atomic write left in `folder`."""
    for path in folder.glob(f".*{_TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)


def read_metadata(path: Path) -> dict[str, str] | None:
    """Return the safetensors metadata of `path`, or None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except SafetensorError:
        return None


class PromptEmbeddings(torch.utils.data.Dataset):
    """Prompt embeddings stored by `embed_prompts`, indexable per prompt without loading every shard.

    Item `i` is a dict with "index" (int), "prompt" (str), "prompt_embeds" `[L, D]`,
    "attention_mask" `[L]` bool (True on prompt tokens including EOS) and "length" (int). Rows are
    read through safetensors memory maps, so an item costs one row, and the object can be handed to
    `torch.utils.data.DataLoader` workers (open files are not pickled).

    Attributes:
        folder: the embedding folder.
        index: the parsed index.json.
        prompts: prompt texts in stored order.
        sha256: hex SHA-256 of each prompt.
        lengths: `[N]` int64 token lengths including EOS, at most `max_length`.
        truncated: `[N]` bool, whether the prompt had more than `max_length` tokens.
        max_length: L, tokens per embedding.
        hidden_size: D, the encoder's hidden size.
        dtype: the stored torch dtype.
        negative_prompt: the negative prompt text ("" for the empty prompt).
        negative_embeds: `[L, D]` embedding of the negative prompt.
        negative_attention_mask: `[L]` bool mask of the negative prompt.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index_path = self.folder / INDEX_NAME
        if not index_path.is_file():
            raise FileNotFoundError(
                f"no {INDEX_NAME} in {str(self.folder)!r}: write embeddings there first with "
                "`blade embed` or blade.prompts.embed_prompts"
            )
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        if self.index.get("format") != FORMAT_NAME or self.index.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(index_path)!r} is not a {FORMAT_NAME} index of version {FORMAT_VERSION} "
                f"(format {self.index.get('format')!r}, version {self.index.get('version')!r}): re-run `blade embed`"
            )
        self.cache_key = self.index["cache_key"]
        self.shard_files = [self.folder / shard["file"] for shard in self.index["shards"]]
        missing = [str(path) for path in self.shard_files if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"embedding shards listed in {str(index_path)!r} are missing: {missing}")

        entries = self.index["prompts"]
        self.prompts = [entry["text"] for entry in entries]
        self.sha256 = [entry["sha256"] for entry in entries]
        self._locations = [(entry["shard"], entry["row"]) for entry in entries]
        self.lengths = torch.tensor([entry["token_length"] for entry in entries], dtype=torch.int64)
        self.truncated = torch.tensor([entry["truncated"] for entry in entries], dtype=torch.bool)
        self.max_length = int(self.index["key"]["max_length"])
        self.hidden_size = int(self.index["hidden_size"])
        self.dtype = getattr(torch, self.index["key"]["dtype"])
        self._position_of = {text: position for position, text in enumerate(self.prompts)}
        self._handles: dict[int, object] = {}

        negative = self.index["negative"]
        self.negative_prompt = negative["text"]
        with safe_open(str(self.folder / negative["file"]), framework="pt") as handle:
            self._check_key(handle.metadata(), negative["file"])
            self.negative_embeds = handle.get_tensor("embeddings")[0]  # [L, D]
            self.negative_length = int(handle.get_tensor("lengths")[0])
        self.negative_attention_mask = torch.arange(self.max_length) < self.negative_length  # [L]

    def _check_key(self, metadata: dict | None, name: str) -> None:
        if (metadata or {}).get("cache_key") != self.cache_key:
            raise ValueError(
                f"{name} in {str(self.folder)!r} was written with another cache key than {INDEX_NAME}: "
                "the folder mixes two runs; re-run `blade embed` into it"
            )

    def _handle(self, shard: int):
        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.shard_files[shard]), framework="pt")
            self._check_key(handle.metadata(), self.shard_files[shard].name)
            self._handles[shard] = handle
        return handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, position: int) -> dict:
        if not -len(self) <= position < len(self):
            raise IndexError(f"prompt index {position} out of range for {len(self)} prompts")
        position = position % len(self)
        shard, row = self._locations[position]
        embeds = self._handle(shard).get_slice("embeddings")[row : row + 1][0]  # [L, D]
        length = int(self.lengths[position])
        return {
            "index": position,
            "prompt": self.prompts[position],
            "prompt_embeds": embeds,
            "attention_mask": torch.arange(self.max_length) < length,
            "length": length,
        }

    def index_of(self, prompt: str) -> int:
        """Return the position of `prompt` (surrounding whitespace stripped); KeyError if not stored."""
        return self._position_of[prompt.strip()]

    def mean_pooled(self) -> torch.Tensor:
        """Return `[N, D]` float32 means of each embedding over its prompt tokens, one shard in memory at a time."""
        pooled = torch.empty(len(self), self.hidden_size, dtype=torch.float32)
        rows_by_shard: dict[int, list[tuple[int, int]]] = {}
        for position, (shard, row) in enumerate(self._locations):
            rows_by_shard.setdefault(shard, []).append((position, row))
        for shard, pairs in rows_by_shard.items():
            embeds = self._handle(shard).get_tensor("embeddings").float()  # [N_shard, L, D]
            positions = torch.tensor([position for position, _ in pairs])
            rows = torch.tensor([row for _, row in pairs])
            lengths = self.lengths[positions]  # [n]
            mask = torch.arange(self.max_length)[None, :] < lengths[:, None]  # [n, L]
            summed = (embeds[rows] * mask[:, :, None]).sum(dim=1)  # [n, D]
            pooled[positions] = summed / lengths[:, None].float()
        return pooled


def load_embeddings(folder: str | Path) -> PromptEmbeddings:
    """Open prompt embeddings written by `embed_prompts` (safetensors only, nothing unpickled).

    Args:
        folder: the output folder of `blade embed` / `embed_prompts`.

    Returns:
        A `PromptEmbeddings` dataset; see its docstring for the item layout.

    Raises:
        FileNotFoundError: if index.json or a listed shard is missing.
        ValueError: if the index has another format or a file belongs to another run.
    """
    return PromptEmbeddings(folder)
