"""Read a prompt file: UTF-8 text, one prompt per line."""

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# How many duplicate lines a log message lists before it only gives the count.
_MAX_LISTED = 5


@dataclass(frozen=True)
class PromptList:
    """The unique prompts of a prompt file, in order of first appearance.

    Attributes:
        path: the file read.
        prompts: unique prompts, stripped of surrounding whitespace.
        lines: 1-based line number of each prompt's first appearance.
        duplicates: `(line, first_line)` for every line that repeats an earlier prompt.
        file_sha256: hex SHA-256 of the file's bytes.
    """

    path: Path
    prompts: list[str]
    lines: list[int]
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    file_sha256: str = ""


def prompt_sha256(prompt: str) -> str:
    """Return the hex SHA-256 of a prompt's UTF-8 bytes, the key that identifies it in an index."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def read_prompt_file(path: str | Path) -> PromptList:
    """Read a UTF-8 prompt file with one prompt per line.

    Surrounding whitespace is stripped from every line, blank lines are skipped, and a prompt that
    appears again is logged as a duplicate and kept once. A UTF-8 byte order mark at the start of the
    file is ignored.

    Args:
        path: the prompt file.

    Returns:
        A `PromptList` with the unique prompts and the duplicate lines.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is empty, contains only blank lines, or a line is not valid UTF-8
            (the message names the file, the line and the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found: pass an existing text file with one prompt per line")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"prompt file {str(path)!r} is empty: expected UTF-8 text with one prompt per line")

    prompts: list[str] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    duplicates: list[tuple[int, int]] = []
    raw_lines = data.split(b"\n")
    if raw_lines[0].startswith(b"\xef\xbb\xbf"):
        raw_lines[0] = raw_lines[0][3:]
    for line_number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"prompt file {str(path)!r}, line {line_number}: invalid UTF-8 at byte {error.start} of the line "
                f"({raw[error.start:error.start + 4]!r}); re-save the file as UTF-8"
            ) from None
        prompt = text.strip()
        if not prompt:
            continue
        if prompt in first_line:
            duplicates.append((line_number, first_line[prompt]))
            continue
        first_line[prompt] = line_number
        prompts.append(prompt)
        lines.append(line_number)

    if not prompts:
        raise ValueError(
            f"prompt file {str(path)!r} contains only blank lines ({len(raw_lines)} lines read): "
            "expected at least one non-blank line"
        )
    if duplicates:
        listed = ", ".join(f"line {line} repeats line {first}" for line, first in duplicates[:_MAX_LISTED])
        more = f" and {len(duplicates) - _MAX_LISTED} more" if len(duplicates) > _MAX_LISTED else ""
        logger.warning(
            "%s: %d duplicate prompt lines stored once (%s%s)", path, len(duplicates), listed, more
        )
    return PromptList(
        path=path,
        prompts=prompts,
        lines=lines,
        duplicates=duplicates,
        file_sha256=hashlib.sha256(data).hexdigest(),
    )
