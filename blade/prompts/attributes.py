"""Read an attribute, such as the colour word, out of a prompt's text."""

import re

# Basic colour terms, the attribute the toy prompts vary ("a red circle moving left").
COLOUR_WORDS = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta",
    "pink", "white", "black", "gray", "grey", "brown",
)


def find_attribute(prompt: str, words: tuple[str, ...] | list[str] = COLOUR_WORDS) -> str | None:
    """Return the first of `words` that occurs in `prompt` as a whole word, ignoring case.

    Args:
        prompt: prompt text.
        words: candidate attribute values, e.g. `COLOUR_WORDS`.

    Returns:
        The matching word as spelled in `words`, or None when the prompt contains none of them.
    """
    if not words:
        raise ValueError("words must contain at least one attribute value, got an empty sequence")
    pattern = r"\b(" + "|".join(re.escape(word) for word in words) + r")\b"
    match = re.search(pattern, prompt, flags=re.IGNORECASE)
    if match is None:
        return None
    found = match.group(1).lower()
    return next(word for word in words if word.lower() == found)
