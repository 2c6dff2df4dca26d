"""minigpt: an educational, from-scratch GPT-2 in PyTorch.

>>> import minigpt
>>> minigpt.encode("Every effort moves you")
[6109, 3626, 6100, 345]
"""

from minigpt.checkpoint import load_model, save_checkpoint
from minigpt.generate import generate, stream
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import decode, encode

__all__ = ["GPT", "GPTConfig", "decode", "encode", "generate", "load_model", "save_checkpoint", "stream"]
