"""Toy inputs the checkers share: the chapters' nine-word logits, and a small random GPT.

``TOY_LOGITS`` are the logits of chapters 2-4 (temperature, top-k, top-p). ``toy_model`` serves the
checkers that run a student's decoding loop (chapters 1, 6 and 7).

GPT-2's own initialisation (std 0.02) gives nearly uniform logits: a loop that feeds the wrong positions
or the wrong beams often picks the same tokens anyway, and the bug goes unnoticed. Larger random weights
give peaked distributions that depend on every input, positions included, so such bugs change the tokens.
The model is tiny, so a checker runs in milliseconds on a CPU.

>>> model = toy_model()
>>> model(torch.tensor([[1, 2, 3]])).shape
torch.Size([1, 3, 64])
"""

from __future__ import annotations

import torch

from minigpt.exercises.checking import Case, show
from minigpt.model import GPT, GPTConfig

# next-token logits after "every effort moves you", over the vocabulary
# closer, every, effort, forward, inches, moves, pizza, toward, you
TOY_LOGITS = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])  # (1, 9)

TOY_CONFIG = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)
TOY_MODEL = "a random GPT (vocabulary of 64 tokens, 2 layers, 2 heads, width 32, context of 32 tokens)"


def toy_model(seed: int = 0) -> GPT:
    """The same random model for the same ``seed``, in eval mode; torch's global random state is left alone.

    >>> torch.equal(toy_model(1).lm_head.weight, toy_model(1).lm_head.weight)
    True
    """
    with torch.random.fork_rng(devices=[]):  # GPT's own init draws from the global generator: give it back
        model = GPT(TOY_CONFIG).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1, generator=g)  # near the identity
            else:
                p.normal_(0.0, 0.3, generator=g)
    return model


def toy_model_case(model: GPT, why: str, **args: object) -> Case:
    """A hidden case whose first argument is the toy ``model``, followed by ``args`` in order.

    A failure message describes the model in words (``TOY_MODEL``) instead of printing its layers.

    >>> case = toy_model_case(toy_model(), "one token", ids=torch.tensor([[5]]), max_new_tokens=1)
    >>> print(case.shown)  # doctest: +ELLIPSIS
    model = a random GPT (vocabulary of 64 tokens, ...), ids = tensor([[5]]), max_new_tokens = 1
    """
    shown = ", ".join([f"model = {TOY_MODEL}", *(f"{name} = {show(value)}" for name, value in args.items())])
    return Case((model, *args.values()), why, shown=shown)
