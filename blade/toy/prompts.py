"""The toy prompt grammar: one coloured shape moving in one direction.

Every prompt reads ``"a {colour} {shape} moving {direction}"``. The grammar enumerates all
6 x 4 x 4 = 96 combinations. A fixed set of 12 combinations is held out from training to test
compositional generalisation: each held-out prompt combines a colour, a shape and a direction that
all appear in training, and every pair of attribute values (colour-shape, colour-direction,
shape-direction) also appears in at least one training prompt.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from blade.io import atomic_write_text

# RGB in [0, 1]; the renderer maps them to [-1, 1]. Saturated primaries and secondaries are far
# apart from each other and from the black background, so nearest-palette colour reading is robust.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
BACKGROUND_RGB: tuple[float, float, float] = (0.0, 0.0, 0.0)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Unit motion vectors in image coordinates (x to the right, y downwards).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}


@dataclass(frozen=True, order=True)
class ToyPrompt:
    """One combination of attributes; ``text`` is the prompt a text encoder sees."""

    colour: str
    shape: str
    direction: str

    def __post_init__(self):
        for name, value, allowed in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("direction", self.direction, tuple(DIRECTIONS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction}"


def parse_prompt(text: str) -> ToyPrompt:
    """Parse ``"a {colour} {shape} moving {direction}"`` (case and surrounding spaces ignored).

    Raises:
        ValueError: when ``text`` does not follow the grammar.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = text.strip().lower().split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(
            f"prompt {text!r} does not follow the toy grammar 'a {{colour}} {{shape}} moving {{direction}}', "
            f"e.g. 'a red circle moving left'"
        )
    return ToyPrompt(colour=words[1], shape=words[2], direction=words[4])


def all_prompts() -> list[ToyPrompt]:
    """Return all 96 combinations in a fixed order (colour, then shape, then direction)."""
    return [ToyPrompt(c, s, d) for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS)]


def heldout_prompts() -> list[ToyPrompt]:
    """Return the 12 held-out combinations.

    Colour i and shape j form a held-out pair when i + j is even (12 of the 24 pairs); that pair
    holds out the single direction (i + 2 j) mod 4, so each pair keeps three directions in training.
    """
    colours, directions = list(COLOURS), list(DIRECTIONS)
    heldout = []
    for i, colour in enumerate(colours):
        for j, shape in enumerate(SHAPES):
            if (i + j) % 2 == 0:
                heldout.append(ToyPrompt(colour, shape, directions[(i + 2 * j) % 4]))
    return sorted(heldout)


def train_prompts() -> list[ToyPrompt]:
    """Return the 84 combinations the teacher trains on."""
    heldout = set(heldout_prompts())
    return [p for p in all_prompts() if p not in heldout]


def demo_prompts() -> list[ToyPrompt]:
    """Return 8 training prompts that together use every colour, shape and direction."""
    train = train_prompts()
    chosen: list[ToyPrompt] = []
    for k in range(8):
        wanted = (list(COLOURS)[k % 6], SHAPES[k % 4], list(DIRECTIONS)[(k + k // 4) % 4])
        match = next((p for p in train if (p.colour, p.shape, p.direction) == wanted), None)
        if match is None:  # the wanted triple is held out: keep colour and shape, take another direction
            match = next(p for p in train if (p.colour, p.shape) == wanted[:2] and p not in chosen)
        chosen.append(match)
    return chosen


def write_prompt_lists(directory: str | os.PathLike) -> dict[str, Path]:
    """Write ``train.txt``, ``heldout.txt`` and ``demo.txt`` (UTF-8, one prompt a line) atomically.

    Returns:
        Mapping from list name to the written path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lists = {"train": train_prompts(), "heldout": heldout_prompts(), "demo": demo_prompts()}
    written = {}
    for name, prompts in lists.items():
        written[name] = atomic_write_text(directory / f"{name}.txt", "".join(p.text + "\n" for p in prompts))
    return written


def read_prompt_list(path: str | os.PathLike) -> list[ToyPrompt]:
    """Read a UTF-8 prompt list (one prompt a line, blank lines skipped) and parse every line.

    Raises:
        ValueError: naming the line that does not follow the grammar.
    """
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(parse_prompt(line))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return prompts
