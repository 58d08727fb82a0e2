"""Build tiny diffusers-like pipeline folders (text encoder and tokenizer only) with seeded weights."""

import io
import json
from pathlib import Path

import torch

HIDDEN = 24


def _t5_tokenizer_from_sentencepiece():
    # A real T5 unigram tokenizer: a tiny sentencepiece model trained offline here, its pieces and
    # scores handed to transformers' T5Tokenizer. Ids 0, 1, 2 are <pad>, </s>, <unk> as in T5.
    import sentencepiece
    from transformers import T5Tokenizer

    colours = ["red", "green", "blue", "yellow", "purple"]
    shapes = ["circle", "square", "triangle"]
    motions = ["left", "right", "up", "down"]
    corpus = [f"a {c} {s} moving {m} quickly" for c in colours for s in shapes for m in motions]
    model_file = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model_file, vocab_size=64, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    processor = sentencepiece.SentencePieceProcessor(model_proto=model_file.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_pipeline_folder(root: Path, family: str, seed: int = 0, tokenizer_max_length: int | None = None) -> Path:
    """Save a seeded 2-layer text encoder and its tokenizer as a pipeline folder under `root`.

    family "wan": UMT5EncoderModel + ByT5Tokenizer, model_index class WanPipeline.
    family "cogvideox": T5EncoderModel + sentencepiece T5Tokenizer, class CogVideoXPipeline.
    family "other": T5EncoderModel + ByT5Tokenizer with model_max_length 40, class ToyPipeline.
    `tokenizer_max_length` sets the Wan tokenizer's `model_max_length`, as the toy teacher does.
    """
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    common = dict(d_model=HIDDEN, d_kv=8, d_ff=40, num_layers=2, num_heads=3,
                  relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0)
    torch.manual_seed(seed)
    if family == "wan":
        tokenizer = ByT5Tokenizer() if tokenizer_max_length is None else ByT5Tokenizer(model_max_length=tokenizer_max_length)
        encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **common))
        classes = ("WanPipeline", "UMT5EncoderModel", "ByT5Tokenizer")
    elif family == "cogvideox":
        tokenizer = _t5_tokenizer_from_sentencepiece()
        encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **common))
        classes = ("CogVideoXPipeline", "T5EncoderModel", "T5Tokenizer")
    elif family == "other":
        tokenizer = ByT5Tokenizer(model_max_length=40)
        encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **common))
        classes = ("ToyPipeline", "T5EncoderModel", "ByT5Tokenizer")
    else:
        raise ValueError(f"family must be 'wan', 'cogvideox' or 'other', got {family!r}")

    folder = root / f"{family}-{seed}-{tokenizer_max_length}"
    encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    model_index = {
        "_class_name": classes[0],
        "_diffusers_version": "0.42.1",
        "text_encoder": ["transformers", classes[1]],
        "tokenizer": ["transformers", classes[2]],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=1), encoding="utf-8")
    return folder
