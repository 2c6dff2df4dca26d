"""minigpt: an educational, from-scratch GPT-2 in PyTorch."""

from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import decode, encode

__all__ = ["GPT", "GPTConfig", "decode", "encode"]
