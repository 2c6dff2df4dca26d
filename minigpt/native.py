"""A whole decode step in C (``csrc/decode_step.c``), compiled on first use for the instructions this CPU has.

Why: a batch-1 decode step on CPU is ~85% weight streaming, which torch's matmuls already do at memory
speed, and ~15% small ops, each paying torch's per-op toll after a matmul has evicted everything it needs
(chapter 12). The C step runs every layer in one call, so that toll is paid once per token, not ~300 times.

The library is built with the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) and OpenMP,
once per source, compiler and instruction set, into ``$MINIGPT_CACHE`` (default ``~/.cache/minigpt``).
The instruction set is torch's answer to "what does this CPU run?" (``torch.backends.cpu.get_cpu_capability``,
which honours ``ATEN_CPU_CAPABILITY``), never an assumption. Where no compiler or no OpenMP is found,
``unavailable_reason()`` says so and ``minigpt.fast.FastDecoder`` keeps its torch step.

>>> isinstance(available(), bool)
True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "decode_step.c"
# torch's name for the widest vector instructions it found on this CPU -> the compiler flags that allow them
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mfma"], "AVX2": ["-mavx2", "-mfma"]}
PER_LAYER = 13  # pointers per layer, in decode_step.c's order: ln_1, c_attn, attn c_proj, ln_2, c_fc, mlp c_proj
#                 (each weight then bias), then the layer's KV cache


def compiler() -> str | None:
    """The C compiler to build with: ``$CC`` if set, else the first of cc, gcc, clang on the PATH.

    >>> compiler() is None or isinstance(compiler(), str)
    True
    """
    return os.environ.get("CC") or next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def build_flags() -> list[str]:
    """Compiler flags for this CPU: optimized, shared, OpenMP, and the vector width torch says it has.

    >>> build_flags()[:4]
    ['-O3', '-shared', '-fPIC', '-fopenmp']
    """
    return ["-O3", "-shared", "-fPIC", "-fopenmp", *ISA_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt") / "native"


@functools.cache
def _build(cc: str | None, flags: tuple[str, ...]) -> ctypes.CDLL | str:
    """The loaded library, or why it could not be built (a string). Built once per compiler and flags."""
    if cc is None:
        return "no C compiler found (set $CC, or install cc, gcc or clang)"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + cc.encode() + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"decode_step-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, then moved in whole
                built = Path(tmp) / target.name
                run = subprocess.run([cc, *flags, str(SOURCE), "-o", str(built), "-lm"], capture_output=True,
                                     text=True)
                if run.returncode != 0:
                    last = (run.stderr.strip().splitlines() or ["no message"])[-1]
                    return f"{cc} {' '.join(flags)} failed: {last}"
                os.replace(built, target)
        except OSError as e:
            return f"cannot build in {target.parent}: {e}"
    lib = ctypes.CDLL(str(target))
    ptr, int_ = ctypes.c_void_p, ctypes.c_int  # decode_step's signature, argument by argument
    lib.decode_step.argtypes = [ptr, int_, ptr, ptr, ptr, ptr, ptr, ptr, ptr, int_, int_, int_, int_, int_, int_,
                                ptr, ptr, int_]
    lib.decode_step.restype = None
    return lib


def _library() -> ctypes.CDLL | str:
    return _build(compiler(), tuple(build_flags()))


def available() -> bool:
    """Can the C decode step be built and loaded here? (Builds it on the first call.)

    >>> available() == (unavailable_reason() is None)
    True
    """
    return not isinstance(_library(), str)


def unavailable_reason() -> str | None:
    """Why the C decode step cannot run here, or None when it can.

    >>> unavailable_reason() is None or "compiler" in unavailable_reason() or "failed" in unavailable_reason()
    True
    """
    lib = _library()
    return lib if isinstance(lib, str) else None


class NativeStep:
    """``decode_step.c`` bound to one decoder's tensors: call it with (B, 1) tokens to get (B, V) logits.

    ``layers`` holds, per layer, the 13 tensors in ``PER_LAYER`` order (matrices (out, in), contiguous,
    float32); ``cache`` tensors are (max_batch, max_len, 2C). The tensors must stay where they are for
    the life of this object: their addresses are read once, here.

    >>> from minigpt.fast import FastDecoder
    >>> from minigpt.model import GPT, GPTConfig
    >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, max_len=8, matmul="native")
    >>> isinstance(decoder.native_step, NativeStep)
    True
    """

    def __init__(self, layers: list[list[torch.Tensor]], wte: torch.Tensor, wpe: torch.Tensor,
                 ln_f: tuple[torch.Tensor, torch.Tensor], n_head: int, max_batch_size: int, max_len: int) -> None:
        lib = _library()
        if isinstance(lib, str):
            raise RuntimeError(f"the C decode step cannot run here: {lib}")
        per_layer = [t for layer in layers for t in layer]
        for t in [*per_layer, wte, wpe, *ln_f]:
            if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
                raise ValueError(f"the C decode step reads contiguous float32 CPU tensors, got {t.dtype} "
                                 f"on {t.device} with strides {t.stride()}")
        self.lib, self.per_layer = lib, per_layer  # kept alive: the C side holds their addresses
        self.pointers = (ctypes.c_void_p * len(per_layer))(*[t.data_ptr() for t in per_layer])
        self.wte, self.wpe, self.ln_f = wte, wpe, ln_f
        self.n_layer, self.n_head, self.max_len = len(layers), n_head, max_len
        self.C, self.vocab = wte.shape[1], wte.shape[0]
        # scratch: (B, 9C) shared by the threads, then (B·C + max_len) for each thread
        self.threads = torch.get_num_threads()
        self.work = torch.empty(max_batch_size * (9 * self.C) + self.threads * (max_batch_size * self.C + max_len))

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, pos: int,
                 key_ok: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, V) for ``tokens`` (B, 1) at ``positions`` (B, 1), written to cache position ``pos``.

        ``key_ok`` (B, max_len) bool marks the cache positions that hold real tokens; None: all of them.
        """
        B = tokens.shape[0]
        tokens, positions = tokens.contiguous(), positions.contiguous()
        logits = torch.empty(B, self.vocab)
        self.lib.decode_step(
            self.pointers, self.n_layer, self.wte.data_ptr(), self.wpe.data_ptr(), self.ln_f[0].data_ptr(),
            self.ln_f[1].data_ptr(), tokens.data_ptr(), positions.data_ptr(),
            None if key_ok is None else key_ok.data_ptr(), B, self.C, self.n_head, self.vocab, self.max_len, pos,
            self.work.data_ptr(), logits.data_ptr(), min(torch.get_num_threads(), self.threads),
        )
        return logits
