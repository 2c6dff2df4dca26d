"""The matmuls the fast decoder can run on CPU, what oneDNN can run here, and how the tuner times them.

A batch-1 decode step multiplies one row by every weight matrix, so it is bound by how fast the weights
come from memory (chapter 12). Which kernel streams a matrix fastest depends on the CPU, the matrix's
shape, its storage order and the batch size, and no rule fits every CPU (docs/performance.md has the
readings). So the decoder's ``matmul="tuned"`` times the candidates (``candidates()``) on its own
matrices, per shape, with ``time_kernels``, and keeps the fastest.

>>> x, w = torch.randn(2, 8), torch.randn(3, 8)
>>> all(torch.allclose(k(x, w), x @ w.T, atol=1e-5) for k in candidates().values())
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minigpt.metrics import interleaved_times

TUNE_REPEATS = 5  # timed passes of each candidate kernel over the whole model
IN_OUT = "blas-in-out"  # the one candidate that wants its matrices stored (in, out)
# oneDNN's own answer to "does this CPU have the instructions for an inner product in this dtype?"
_ONEDNN_PROBES = {torch.bfloat16: ("bf16", "_is_mkldnn_bf16_supported"),
                  torch.float16: ("fp16", "_is_mkldnn_fp16_supported")}


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, b)`` computed by oneDNN's inner product (CPU), the kernel ``torch.compile`` picks.

    >>> x, w = torch.randn(2, 8), torch.randn(3, 8)
    >>> torch.allclose(onednn_linear(x, w), F.linear(x, w), atol=1e-5)
    True
    """
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def candidates() -> dict[str, Callable]:
    """The matmuls ``matmul="tuned"`` times against each other on CPU, by name.

    "onednn" and "blas" read nn.Linear's (out, in) layout; "blas-in-out" is ``F.linear`` over matrices
    stored (in, out) (``in_out_layout``), so the same call streams the other layout. The tuner looks
    them up at each tuning, so a test can slow one down.

    >>> list(candidates())
    ['onednn', 'blas', 'blas-in-out']
    """
    return {"onednn": onednn_linear, "blas": F.linear, IN_OUT: F.linear}


def in_out_layout(w: torch.Tensor) -> torch.Tensor:
    """A copy of an (out, in) matrix stored as (in, out), returned as an (out, in) view: same values.

    >>> v = in_out_layout(torch.arange(6.0).view(2, 3))
    >>> v.tolist(), v.stride()
    ([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], (1, 2))
    """
    return w.t().contiguous().t()


def onednn_supports(dtype: torch.dtype) -> bool:
    """Can oneDNN's inner product (``onednn_linear``) run ``dtype`` on this CPU? oneDNN is asked, never assumed.

    fp32 runs wherever torch was built with oneDNN. bf16 and fp16 need the CPU's help (AVX512-BF16,
    AVX512-FP16 or AMX); without it oneDNN cannot even build the kernel ("could not create a primitive
    descriptor"), so its own probes decide. fp64 it has no inner product for on any CPU.

    >>> onednn_supports(torch.float32) == torch.backends.mkldnn.is_available()
    True
    >>> onednn_supports(torch.float64)
    False
    """
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype in _ONEDNN_PROBES:
        return bool(getattr(torch.ops.mkldnn, _ONEDNN_PROBES[dtype][1])())
    return False


def onednn_lacks(dtype: torch.dtype) -> str | None:
    """What keeps oneDNN's inner product from running ``dtype`` here, with the call that tells; None if nothing.

    >>> onednn_lacks(torch.float64)
    'oneDNN has no torch.float64 inner product'
    """
    if onednn_supports(dtype):
        return None
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if dtype in _ONEDNN_PROBES:
        name, probe = _ONEDNN_PROBES[dtype]
        return f"this CPU's oneDNN has no {name} inner product (torch.ops.mkldnn.{probe}() is False)"
    return f"oneDNN has no {dtype} inner product"


def time_kernels(
    kernels: dict[str, Callable], names: dict[tuple[int, int], list[str]], matrices: dict[tuple, list[tuple]],
    x: dict[tuple[int, int], torch.Tensor], repeats: int = TUNE_REPEATS,
) -> dict[tuple[tuple[int, int], str], float]:
    """Seconds of each (shape, kernel) over every matrix of that shape, the fastest of ``repeats`` turns.

    ``names[shape]`` are the kernels to try on the (in, out) ``shape``; ``matrices[shape, name]`` its
    (weight, bias) tuples in the layout that kernel reads; ``x[shape]`` the input rows. One turn runs
    every shape with one kernel before the next kernel's turn on any shape, so successive timings of one
    shape have the rest of the model streamed between them: they read the matrices from memory, as a
    decode step does, not from a last-level cache that one shape's matrices would fit. The kernels take
    turns (``minigpt.metrics.interleaved_times``), so a slow spell of the machine does not single out one
    of them; each is called once first, untimed.

    >>> w = [(torch.randn(3, 8), None)]
    >>> seconds = time_kernels(candidates(), {(8, 3): ["blas"]}, {((8, 3), "blas"): w}, {(8, 3): torch.randn(1, 8)})
    >>> list(seconds)
    [((8, 3), 'blas')]
    """
    def run(shape: tuple[int, int], name: str) -> Callable[[], None]:
        def one_shape() -> None:
            for w, *b in matrices[shape, name]:
                kernels[name](x[shape], w, *b)
        return one_shape

    rounds = max(len(n) for n in names.values())
    runs = {(shape, n[i]): run(shape, n[i]) for i in range(rounds) for shape, n in names.items() if i < len(n)}
    return {key: spread.low for key, spread in interleaved_times(runs, repeats).items()}
