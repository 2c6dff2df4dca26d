"""GPT-2's byte-pair-encoding tokenizer, fully offline.

tiktoken normally downloads GPT-2's merge ranks on first use, which fails behind a firewall. We ship the
same 50,256 ranks as package data (``assets/gpt2.tiktoken``, taken from OpenAI's MIT-licensed
``openai-whisper`` source package; see ``assets/gpt2.tiktoken.LICENSE``) and build the encoding ourselves.
The result is exactly tiktoken's ``gpt2`` encoding: same ids for every text.

>>> encode("Every effort moves you")
[6109, 3626, 6100, 345]
>>> decode([6109, 3626, 6100, 345])
'Every effort moves you'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

EOT_TOKEN = "<|endoftext|>"
EOT_TOKEN_ID = 50256  # the only special token; GPT-2 uses it between documents
VOCAB_SIZE = 50257  # 50,256 merge ranks + <|endoftext|>


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 ``tiktoken.Encoding``, built from the shipped rank file (no network).

    >>> gpt2_encoding().n_vocab
    50257
    """
    ranks_path = resources.files("minigpt") / "assets" / "gpt2.tiktoken"
    with resources.as_file(ranks_path) as path:
        ranks = load_tiktoken_bpe(str(path))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_TOKEN_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


def encode(text: str, *, allow_special: bool = False) -> list[int]:
    """Turn text into GPT-2 token ids.

    ``<|endoftext|>`` in the text is an error unless ``allow_special=True``, as in tiktoken: text from
    users should not be able to smuggle in a document boundary by accident.

    >>> encode("Hello <|endoftext|>", allow_special=True)
    [15496, 220, 50256]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not allow_special and EOT_TOKEN in text:
        raise ValueError(
            f"text contains the special token {EOT_TOKEN!r}; pass allow_special=True to encode it "
            f"as id {EOT_TOKEN_ID}, or remove it from the text"
        )
    allowed = {EOT_TOKEN} if allow_special else set()
    return gpt2_encoding().encode(text, allowed_special=allowed, disallowed_special=())


def decode(ids: Iterable[int]) -> str:
    """Turn GPT-2 token ids back into text (invalid UTF-8 becomes U+FFFD, as in tiktoken).

    >>> decode([15496, 11, 995])
    'Hello, world'
    """
    return decode_bytes(ids).decode("utf-8", errors="replace")


def decode_bytes(ids: Iterable[int]) -> bytes:
    """The raw bytes behind token ids; one token can hold part of a UTF-8 character.

    >>> decode_bytes([15496])
    b'Hello'
    """
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}), got {bad[0]}")
    return gpt2_encoding().decode_bytes(ids)
