"""The peers minigpt is measured against: transformers' GPT-2 on the same weights, and torch's int8.

transformers is optional: without it, ``to_transformers`` returns None and the bench leaves its rows out
with a note. Its GPT-2 is minigpt's layout under the same names (``minigpt.export.minigpt_to_hf`` and
``hf_config``, which the Hugging Face export writes to disk, are used here in memory).
"""

from __future__ import annotations

import copy
import warnings

import torch

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
