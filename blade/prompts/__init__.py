"""Prompt embedding: encode a prompt file with a pipeline's text encoder into a safetensors cache."""

from blade.prompts.attributes import COLOUR_WORDS, find_attribute
from blade.prompts.embed import embed_prompts
from blade.prompts.encoder import PromptEncoder
from blade.prompts.prompt_file import PromptList, read_prompt_file
from blade.prompts.storage import PromptEmbeddings, load_embeddings

__all__ = [
    "COLOUR_WORDS",
    "PromptEmbeddings",
    "PromptEncoder",
    "PromptList",
    "embed_prompts",
    "find_attribute",
    "load_embeddings",
    "read_prompt_file",
]
