"""minigpt: an educational, from-scratch GPT-2 in PyTorch.

>>> import minigpt
>>> minigpt.encode("Every effort moves you")
[6109, 3626, 6100, 345]
"""

from minigpt.checkpoint import load_model, save_checkpoint
from minigpt.explore import explore
from minigpt.generate import generate, stream
from minigpt.model import GPT, GPTConfig
from minigpt.search import beam_search, contrastive_search, sample_and_rank
from minigpt.speculative import prompt_lookup_generate, speculative_generate
from minigpt.tokenizer import decode, encode

__version__ = "0.1.0"  # the one source: pyproject.toml reads it, and `minigpt --version` prints it

__all__ = [
    "__version__", "GPT", "GPTConfig", "beam_search", "contrastive_search", "decode", "encode", "explore", "generate",
    "load_model", "prompt_lookup_generate", "sample_and_rank", "save_checkpoint", "speculative_generate", "stream",
]
