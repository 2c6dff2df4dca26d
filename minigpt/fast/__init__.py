"""The performance wing: the same GPT-2 decoded fast, with a static cache, tuned kernels and a decode step in C.

Read the teaching core first (``minigpt.model``, ``minigpt.generate``): this package computes the same
tokens, and its tests check that it does. The core never imports it; it imports only the core. The
folder's README.md says what each file holds.

>>> from minigpt.fast import FastDecoder
>>> FastDecoder.__name__
'FastDecoder'
"""

from minigpt.fast.decoder import FastDecoder
from minigpt.fast.kernels import onednn_supports
from minigpt.fast.options import MATMULS, WEIGHTS, UnsupportedOptions, choose_matmul
from minigpt.quantize import ACTIVATIONS

__all__ = ["ACTIVATIONS", "MATMULS", "WEIGHTS", "FastDecoder", "UnsupportedOptions", "choose_matmul",
           "onednn_supports"]
