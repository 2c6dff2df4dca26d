"""The performance wing: the same GPT-2 decoded fast, with a static cache, tuned kernels and a decode step in C.

Read the teaching core first (``minigpt.model``, ``minigpt.generate``): this package computes the same
tokens, and its tests check that it does. The core never imports it.

>>> from minigpt.fast import FastDecoder
>>> FastDecoder.__name__
'FastDecoder'
"""

from minigpt.fast.decoder import MATMULS, WEIGHTS, FastDecoder, choose_matmul, onednn_supports

__all__ = ["MATMULS", "WEIGHTS", "FastDecoder", "choose_matmul", "onednn_supports"]
