"""The peers minigpt is measured against: transformers' GPT-2 and llama.cpp on the same weights, torch's int8.

transformers and llama.cpp (``llama-cpp-python``) are optional: without them, ``to_transformers`` and
``llama_cpp_version`` return None, and the bench leaves their rows out with a note. transformers' GPT-2 is
minigpt's layout under the same names (``minigpt.export.minigpt_to_hf`` and ``hf_config``, which the Hugging
Face export writes to disk, are used here in memory); llama.cpp reads the GGUF file ``minigpt export --to
gguf`` writes (``minigpt.export.export_gguf``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from minigpt.checks import check_choice, check_int
from minigpt.export import hf_config, minigpt_to_hf
from minigpt.generate import PAD_TOKEN_ID
from minigpt.model import GPT


def transformers_version() -> str | None:
    """The installed transformers' version, or None when it is not installed.

    >>> transformers_version() is None or transformers_version()[0].isdigit()
    True
    """
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def to_transformers(model: GPT):
    """A transformers ``GPT2LMHeadModel`` with ``model``'s weights and dtype, or None without transformers.

    >>> from minigpt.model import GPTConfig
    >>> hf = to_transformers(GPT(GPTConfig.from_preset("tiny")))
    >>> hf is None or type(hf).__name__ == "GPT2LMHeadModel"
    True
    """
    try:
        import transformers
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()  # no "Setting pad_token_id" chatter over the progress bar
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_dict(hf_config(model) | no_dropout)).eval()
    missing, unexpected = hf.load_state_dict(minigpt_to_hf(model.state_dict()), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the head is tied to wte, so it may be missing
        raise ValueError(f"weights do not map onto transformers' GPT-2: missing {missing}, unexpected {unexpected}")
    p = model.transformer.wte.weight
    return hf.to(device=p.device, dtype=p.dtype)


def transformers_generate(hf_model, ids: torch.Tensor, n: int, num_beams: int = 1, **kwargs) -> torch.Tensor:
    """transformers' ``generate`` for exactly ``n`` new tokens after the unpadded ``ids``: greedy or beams, EOS off.

    With beams it returns the best sequence of each prompt; length_penalty 1 and early_stopping False are
    transformers' defaults and ``beam_search``'s, spelled out so both sides search the same way. Other
    ``kwargs`` go to ``generate`` (``assistant_model`` for assisted generation).

    >>> from minigpt.model import GPTConfig
    >>> hf = to_transformers(GPT(GPTConfig.from_preset("tiny")))
    >>> hf is None or transformers_generate(hf, torch.tensor([[15496, 11]]), 3).shape == (1, 5)
    True
    """
    with torch.inference_mode():
        return hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, num_beams=num_beams, length_penalty=1.0, early_stopping=False,
                                 eos_token_id=None, pad_token_id=PAD_TOKEN_ID, **kwargs)


class LogitsOnly(torch.nn.Module):
    """A transformers model that returns its logits tensor, as a minigpt model does (for ``heldout_loss``)."""

    def __init__(self, hf_model: torch.nn.Module) -> None:
        super().__init__()
        self.hf_model = hf_model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf_model(ids).logits


def quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` through torch's ``quantize_dynamic``: the int8 peer a user would try first.

    Every ``nn.Linear`` becomes a dynamically quantized one (int8 weights with one scale per matrix, int8
    activations quantized on the fly, fbgemm's kernels). transformers' GPT-2 builds its blocks from
    ``Conv1D``, which it does not touch: only that model's output head is quantized.

    >>> from minigpt.model import GPTConfig
    >>> type(quantize_dynamic(GPT(GPTConfig.from_preset("tiny"))).lm_head)
    <class 'torch.ao.nn.quantized.dynamic.modules.linear.Linear'>
    """
    with warnings.catch_warnings():  # torch's deprecation notice for its quantized tensors, at every call
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear},
                                                      dtype=torch.qint8)


# --- llama.cpp --------------------------------------------------------------------------------------

# bench dtype -> the GGUF type ``minigpt.export.export_gguf`` writes for it; int8 and bf16 have no twin there
LLAMACPP_DTYPES = {"fp32": "f32", "fp16": "f16", "q8_0": "q8_0", "q4_0": "q4_0"}


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python's version, or None when it is not installed.

    >>> llama_cpp_version() is None or llama_cpp_version()[0].isdigit()
    True
    """
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.__version__


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send what C code writes to the process's stderr (file descriptor 2) to /dev/null inside the block.

    llama.cpp prints some warnings itself, whatever ``verbose`` says (a context longer than the model's,
    which it rounds ``n_ctx`` up to); they would land in the middle of the bench's progress bar.

    >>> with quiet_stderr():
    ...     _ = os.write(2, b"not shown")
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LlamaCppDecoder:
    """llama.cpp (the ``llama_cpp`` binding) holding ``model``'s GGUF export at bench dtype ``dtype``: greedy, batch 1.

    The model is written by ``minigpt.export.export_gguf`` (``LLAMACPP_DTYPES``: fp32 -> f32, fp16 -> f16,
    q8_0, q4_0) into a temporary folder kept while the decoder lives, and loaded once, here, so that the
    load stays out of any timing (as ``FastDecoder`` is built once). llama.cpp runs ``threads`` threads
    (the bench gives it ``torch.get_num_threads()``, as torch has), with float32 keys and values in its
    cache as minigpt keeps them, and ``context`` positions at least.

    ``generate`` feeds the prompt in one batch, then one token at a time, and picks each token as the
    argmax of llama.cpp's logits: greedy, with EOS off, exactly ``n`` new tokens.

    >>> from minigpt.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig.from_preset("tiny")).eval()
    >>> decoder = LlamaCppDecoder(model, "fp32", context=8) if llama_cpp_version() else None
    >>> decoder is None or decoder.generate(torch.tensor([[15496, 11]]), 3).shape == (1, 5)
    True
    """

    def __init__(self, model: GPT, dtype: str, context: int, threads: int | None = None) -> None:
        import llama_cpp  # optional: the ``llama-cpp`` extra

        from minigpt.export import export_gguf  # imports gguf, which only this peer needs

        check_choice("dtype", dtype, LLAMACPP_DTYPES)
        check_int("context", context, 1)
        if threads is not None:
            check_int("threads", threads, 1)
        threads = torch.get_num_threads() if threads is None else threads
        self._folder = tempfile.TemporaryDirectory(prefix="minigpt-bench-")
        path = export_gguf(model, Path(self._folder.name) / f"model-{LLAMACPP_DTYPES[dtype]}.gguf",
                           dtype=LLAMACPP_DTYPES[dtype])
        with quiet_stderr():
            self.llm = llama_cpp.Llama(str(path), n_ctx=context, n_batch=max(context, 512), n_threads=threads,
                                       n_threads_batch=threads, type_k=llama_cpp.GGML_TYPE_F32,
                                       type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
        self._logits_of_last = functools.partial(llama_cpp.llama_get_logits_ith, self.llm.ctx, -1)
        self.threads = threads

    def generate(self, ids: torch.Tensor, n: int) -> torch.Tensor:
        """The (1, T + n) ids: the (1, T) prompt ``ids`` and llama.cpp's ``n`` greedy tokens after it."""
        if ids.dim() != 2 or ids.size(0) != 1:
            raise ValueError(f"ids must be one prompt of shape (1, T): llama.cpp's binding decodes one sequence, "
                             f"got shape {tuple(ids.shape)}")
        prompt, vocab = ids[0].tolist(), self.llm.n_vocab()
        self.llm.reset()  # forget the last run: its cache positions are overwritten from 0
        new = []
        self.llm.eval(prompt)
        for i in range(n):
            logits = np.ctypeslib.as_array(self._logits_of_last(), shape=(vocab,))  # (V,) no copy
            new.append(int(logits.argmax()))
            if i < n - 1:
                self.llm.eval(new[-1:])
        return torch.tensor([prompt + new], device=ids.device)

    def close(self) -> None:
        """Free llama.cpp's model and context, and delete the exported file."""
        self.llm.close()
        self._folder.cleanup()
