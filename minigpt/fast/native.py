"""A whole decode step in C (``csrc/decode_step.c``), compiled on first use for the instructions this CPU has.

Why: a batch-1 decode step on CPU is mostly weight streaming, which torch's matmuls already do at memory
speed, plus about 25 small ops per layer, each paying torch's per-op toll after a matmul has evicted
everything it needs (chapter 12). The C step runs every layer in one call, so that toll is paid once per
token, not once per op.

The library is built with the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) and OpenMP,
once per source, declared layout, compiler and instruction set, into ``$MINIGPT_CACHE`` (default
``~/.cache/minigpt``). What C and Python must agree on (the pointers per layer, the step's argument struct,
the exported functions) is declared once in ``minigpt.fast.layout``: the build compiles its ``header()``
into the library, and loading compares what the library was compiled with against it (``LayoutMismatch``).
The instruction set is torch's answer to "what does this CPU run?" (``torch.backends.cpu.get_cpu_capability``,
which honours ``ATEN_CPU_CAPABILITY``), never an assumption. Where no compiler or no OpenMP is found,
``unavailable_reason()`` says so and ``minigpt.fast.FastDecoder`` keeps its torch step.

The library's name is computable by anyone, so what sits at it is loaded only when it is provably the one
built here: the build records the library's sha256 and size beside it (``<name>.so.sha256``), and before
``ctypes`` opens it (which runs its constructors) the library and its record must be regular files of this
user's that no one else may write, in a directory of this user's that no one else may write, and the
library's digest and size must be those recorded. A library that fails this (truncated, foreign, never
recorded) is rebuilt in its place; where the directory itself is writable by others, the build goes to a
private temporary directory instead and the shared one is left alone.

>>> isinstance(available(), bool)
True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from minigpt.checks import check_choice
from minigpt.fast import layout
from minigpt.quantize import ACTIVATIONS, BLOCK_SIZE, BYTES_PER_WEIGHT, has_vnni

SOURCE = Path(__file__).parent / "csrc" / "decode_step.c"
HEADER = "decode_step_layout.h"  # layout.header()'s text, written beside the source at build time
# torch's name for the widest vector instructions it found on this CPU -> the compiler flags that allow them
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mfma"], "AVX2": ["-mavx2", "-mfma"]}
# the dtypes of the tensors the step reads: float32 (and float16, bfloat16 weights), int8 weights and their
# int32 sums, uint8 GGUF blocks
READABLE = (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int32)


class LayoutMismatch(RuntimeError):
    """The library was compiled with another layout than ``minigpt.fast.layout`` declares: passing it
    pointers would read the wrong tensors, so it is refused on load."""


def compiler() -> str | None:
    """The C compiler to build with: ``$CC`` if set, else the first of cc, gcc, clang on the PATH.

    >>> compiler() is None or isinstance(compiler(), str)
    True
    """
    return os.environ.get("CC") or next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


@functools.cache
def native_macros(cc: str | None) -> frozenset[str]:
    """The instruction-set macros the compiler ``cc`` defines for this CPU (``-march=native``), such as
    ``__F16C__`` or ``__AVX512VL__``; no answer (no compiler, another CPU family, a compiler without
    ``-march=native``) is none.

    >>> native_macros(None)
    frozenset()
    """
    if cc is None:
        return frozenset()
    try:
        run = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    if run.returncode != 0:
        return frozenset()
    return frozenset(line.split()[1] for line in run.stdout.splitlines() if line.startswith("#define ") and
                     line.endswith(" 1") and len(line.split()) == 3)


def has_f16c(cc: str | None) -> bool:
    """Does this CPU convert float16 to float32 in one instruction (F16C)? ``native_macros(cc)`` says.

    >>> has_f16c(None)
    False
    """
    return "__F16C__" in native_macros(cc)


def has_avx512vl(cc: str | None) -> bool:
    """Does this CPU run AVX-512 instructions on 256-bit registers (AVX512-VL)? ``native_macros(cc)`` says.

    >>> has_avx512vl(None)
    False
    """
    return "__AVX512VL__" in native_macros(cc)


def build_flags(cc: str | None = None) -> list[str]:
    """Compiler flags for this CPU: optimized, shared, OpenMP, and the instructions torch says it has.

    The vector width is torch's (``get_cpu_capability``); with AVX-512, the int8 dot product instruction
    (VNNI) is added where the CPU has it (``minigpt.quantize.has_vnni``), so an int8 step adds 64
    products per instruction instead of 32, and with it AVX512-VL where the CPU has that too
    (``has_avx512vl``), so Q8_0 inputs' block products run vpdpbusd on 256-bit registers (a block is 32
    bytes); with AVX2 or AVX-512, F16C where the CPU has it (``has_f16c``), so float16 weights widen 8
    at a time in one instruction. The CPU's answers come from the compiler ``cc`` (default
    ``compiler()``). The portable build (capability "default") asks for none of them.

    >>> build_flags()[:4]
    ['-O3', '-shared', '-fPIC', '-fopenmp']
    """
    capability = torch.backends.cpu.get_cpu_capability()
    cc = cc or compiler()
    vnni = ["-mavx512vnni", *(["-mavx512vl"] if has_avx512vl(cc) else [])] if has_vnni() else []
    f16c = ["-mf16c"] if capability in ISA_FLAGS and has_f16c(cc) else []
    return ["-O3", "-shared", "-fPIC", "-fopenmp", *ISA_FLAGS.get(capability, []), *vnni, *f16c]


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt") / "native"


def library_name(cc: str, flags: Sequence[str], header: str) -> str:
    """The cached library's file name: a digest of the source, the declared layout, the compiler and flags.

    >>> library_name("cc", ["-O3"], "") == library_name("cc", ["-O3"], "") != library_name("gcc", ["-O3"], "")
    True
    """
    key = hashlib.sha256(SOURCE.read_bytes() + header.encode() + cc.encode() + " ".join(flags).encode())
    return f"decode_step-{key.hexdigest()[:16]}.so"


def _record(library: Path) -> Path:
    """Where the build writes ``library``'s sha256 and size: beside it, as ``<name>.so.sha256``."""
    return library.with_name(library.name + ".sha256")


def _only_ours(st: os.stat_result) -> bool:
    """Is this (file or directory) owned by this user, with no write permission for group or others?"""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def untrusted(library: Path) -> str | None:
    """Why ``library`` is not provably the one built here, or None when it is and may be loaded.

    It is, when it and its record (``<name>.so.sha256``, "<sha256> <size>") are regular files (not links)
    of this user's that no one else may write, and the library's sha256 and size are those recorded. It
    reads the file and never opens it as a library: opening one runs its constructors.

    >>> untrusted(Path("/nonexistent/decode_step.so"))
    'no /nonexistent/decode_step.so.sha256 (the record of a build) beside it'
    """
    record = _record(library)
    try:
        for path in (record, library):
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not _only_ours(st):
                return f"{path} is not a regular file of this user's that only this user may write"
        digest, size = record.read_text().split()
        data = library.read_bytes()
    except FileNotFoundError as e:
        return f"no {e.filename} (the record of a build) beside it" if str(e.filename) == str(record) else str(e)
    except (OSError, ValueError) as e:  # unreadable, or a record that is not "<sha256> <size>"
        return f"cannot read {record} as '<sha256> <size>': {e}"
    if str(len(data)) != size or hashlib.sha256(data).hexdigest() != digest:
        return f"{library} is not the library built here (its sha256 or size is not the one in {record.name})"
    return None


def _compile(cc: str, flags: Sequence[str], header: str, out: Path) -> str | None:
    """Compile the source with ``header`` into ``out`` (in a directory only we write); None, or why not."""
    (out.parent / HEADER).write_text(header)
    try:
        run = subprocess.run([cc, *flags, f"-I{out.parent}", str(SOURCE), "-o", str(out), "-lm"],
                             capture_output=True, text=True)
    except OSError as e:  # not there, not executable, not a program
        return f"the C compiler {cc} cannot run ({e.strerror}); set $CC to a C compiler, or install cc, gcc or clang"
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{cc} {' '.join(flags)} failed: {last}"
    return None


@functools.cache
def _build(cc: str | None, flags: tuple[str, ...], header: str, directory: Path) -> ctypes.CDLL | str:
    """The loaded library, or why it cannot run here (a string). Built once per source, header, compiler and
    flags into ``directory``, whose copy is loaded only if ``untrusted`` finds nothing wrong with it (else it
    is rebuilt); where ``directory`` is writable by others, built and loaded from a private temporary
    directory instead. A library that reports another layout than ``layout`` declares raises ``LayoutMismatch``."""
    if cc is None:
        return "no C compiler found (set $CC, or install cc, gcc or clang)"
    target = directory / library_name(cc, flags, header)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shared = not _only_ours(os.stat(directory))
    except OSError as e:
        return f"cannot build in {directory}: {e}"
    if shared:  # anyone could swap what we check for what we load: build where only we can write
        with tempfile.TemporaryDirectory(prefix="minigpt-native-") as private:
            built = Path(private) / target.name
            return _compile(cc, flags, header, built) or _open(built)  # removed once loaded: the mapping stays
    if untrusted(target) is not None:  # not built yet, or not provably the build's output: (re)build it
        try:
            with tempfile.TemporaryDirectory(dir=directory) as tmp:  # built aside, then moved in whole
                built = Path(tmp) / target.name
                if why_not := _compile(cc, flags, header, built):
                    return why_not
                data = built.read_bytes()
                (Path(tmp) / "record").write_text(f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")
                os.replace(built, target)
                os.replace(Path(tmp) / "record", _record(target))
        except OSError as e:
            return f"cannot build in {directory}: {e}"
    return _open(target)


def _open(path: Path) -> ctypes.CDLL | str:
    """Load the library at ``path`` (checked already) and declare its functions; the library, or why not."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # built, but not loadable here (a missing OpenMP runtime, say)
        return f"cannot load {path}: {e}"
    for name, (ret, args) in layout.FUNCTIONS.items():  # the signatures the header declared
        function = getattr(lib, name, None)
        if function is None:
            return f"cannot load {path}: it has no function {name} (minigpt.fast.layout.FUNCTIONS)"
        function.argtypes, function.restype = [*map(layout.ctype, args)], layout.ctype(ret)
    check_layout(lib)
    return lib


def check_layout(lib: ctypes.CDLL) -> None:
    """Raise ``LayoutMismatch`` unless ``lib`` was compiled with the layout ``minigpt.fast.layout`` declares.

    >>> available() is False or check_layout(load()) is None
    True
    """
    expected = layout.expected_layout()
    compiled = (ctypes.c_int64 * len(expected))()
    count = lib.compiled_layout(compiled, len(expected))  # how many numbers it has; it writes at most len(expected)
    wrong = [f"{name}: C {c}, Python {p}" for (name, p), c in zip(expected.items(), compiled) if c != p]
    if count != len(expected):
        wrong.insert(0, f"numbers reported: C {count}, Python {len(expected)}")
    if wrong:
        raise LayoutMismatch(f"{lib._name} was compiled with another layout than minigpt.fast.layout declares "
                             f"({'; '.join(wrong)}); rebuild it from this source")


def _library() -> ctypes.CDLL | str:
    cc = compiler()
    return _build(cc, tuple(build_flags(cc)), layout.header(), _cache_dir())


def available() -> bool:
    """Can the C decode step be built and loaded here? (Builds it on the first call.)

    >>> available() == (unavailable_reason() is None)
    True
    """
    return not isinstance(_library(), str)


def unavailable_reason() -> str | None:
    """Why the C decode step cannot run here, or None when it can.

    >>> unavailable_reason() is None or isinstance(unavailable_reason(), str)
    True
    """
    lib = _library()
    return lib if isinstance(lib, str) else None


def load() -> ctypes.CDLL:
    """The library, built on first use: a RuntimeError that says why where it cannot run here.

    >>> available() is False or load().compiled_layout(None, 0) == len(layout.expected_layout())
    True
    """
    lib = _library()
    if isinstance(lib, str):
        raise RuntimeError(f"the C decode step cannot run here: {lib}")
    return lib


def matvec(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w @ x`` for a float32 (rows, cols) matrix and a (cols,) vector, by the C step's own kernel.

    It streams ``w`` one row at a time on torch's threads, as a decode step streams each weight matrix,
    so timing it on a large matrix measures how fast the step can read memory (``minigpt.bench`` does).
    Both must be contiguous float32 CPU tensors.

    >>> w, x = torch.randn(40, 24), torch.randn(24)
    >>> available() is False or torch.allclose(matvec(w, x), w @ x, atol=1e-5)
    True
    """
    lib = load()
    for name, t, ndim in (("w", w, 2), ("x", x, 1)):
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() or t.ndim != ndim:
            raise ValueError(f"{name} must be a contiguous {ndim}-D float32 CPU tensor, got {tuple(t.shape)} "
                             f"{t.dtype} on {t.device} with strides {t.stride()}")
    if x.shape[0] != w.shape[1]:
        raise ValueError(f"x must have w's {w.shape[1]} columns, got {x.shape[0]}")
    y = torch.empty(w.shape[0])
    lib.matvec_f32(w.data_ptr(), w.shape[0], w.shape[1], x.data_ptr(), y.data_ptr(), torch.get_num_threads())
    return y


def quantize_q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The C step's rounding of its inputs to Q8_0 (``quantize_rows_q8_0``), on a (rows, n) float32 tensor:
    float16 ``scale`` (rows, n // 32) and int8 codes (rows, n), as ``minigpt.quantize.quantize_q8_0`` returns
    them (and, bit for bit, the same: tests/test_fast_formats.py checks).

    >>> from minigpt import quantize
    >>> x = torch.randn(2, 64)
    >>> available() is False or all(map(torch.equal, quantize_q8_0(x), quantize.quantize_q8_0(x)))
    True
    """
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 2 or x.shape[1] % BLOCK_SIZE:
        raise ValueError(f"x must be a 2-D (rows, n) float32 CPU tensor with n a multiple of {BLOCK_SIZE}, got "
                         f"shape {tuple(x.shape)} {x.dtype} on {x.device}")
    x = x.contiguous()
    codes, scale = torch.empty(x.shape, dtype=torch.int8), torch.empty(x.shape[0], x.shape[1] // BLOCK_SIZE,
                                                                         dtype=torch.float16)
    load().quantize_rows_q8_0(x.data_ptr(), x.numel(), codes.data_ptr(), scale.data_ptr())
    return scale, codes


def matvec_format(w: torch.Tensor, fmt: str, x: torch.Tensor, activations: str = "float32") -> torch.Tensor:
    """``x (B, cols) @ W^T`` by the C step's kernel for ``fmt`` (``layout.FORMATS`` but "int8"), where ``w`` is
    W (rows, cols) as the step stores it (``minigpt.fast.decoder.stored_as``; float32 for "f32"), its inputs
    as ``activations`` says: one matrix of a step, alone, for checking its arithmetic. (B, rows) float32.

    >>> w, x = torch.randn(8, 64), torch.randn(2, 64)
    >>> available() is False or torch.allclose(matvec_format(w, "f32", x), x @ w.T, atol=1e-5)
    True
    """
    check_choice("fmt", fmt, [f for f in layout.FORMATS if f != "int8"])
    check_choice("activations", activations, ACTIVATIONS)
    if x.dtype != torch.float32 or x.ndim != 2 or w.ndim != 2 or not w.is_contiguous():
        raise ValueError(f"x must be a 2-D float32 tensor and w a contiguous 2-D one, got x {tuple(x.shape)} "
                         f"{x.dtype} and w {tuple(w.shape)}")
    cols = x.shape[1]
    per_row = round(cols * BYTES_PER_WEIGHT["fp32" if fmt == "f32" else fmt])  # a Q8_0/Q4_0 row is whole blocks
    if (fmt in ("q8_0", "q4_0") and cols % BLOCK_SIZE) or w.shape[1] * w.element_size() != per_row:
        raise ValueError(f"w must hold rows of {cols} weights in {fmt} ({per_row} bytes; cols a multiple of "
                         f"{BLOCK_SIZE} for blocks), got shape {tuple(w.shape)} {w.dtype}")
    rows, x = w.shape[0], x.contiguous()
    y = torch.empty(x.shape[0], rows)
    load().matvec_format(w.data_ptr(), layout.FORMATS.index(fmt), ACTIVATIONS.index(activations), rows, x.shape[1],
                         x.data_ptr(), x.shape[0], y.data_ptr(), torch.get_num_threads())
    return y


def matrix_for_c(weight: torch.Tensor, bias: torch.Tensor | None,
                 scale: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """One matrix as ``decode_step.c`` reads it: weights, scales, the rows' sums of weights, bias.

    A float32 matrix has no scales and no sums (None). An int8 one (``scale`` per output row, as
    ``minigpt.quantize.quantize_per_channel`` makes them) brings its rows' sums: the C step adds integer
    products of weights and offset activations, and takes the offset times each row's sum back off.

    >>> q = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
    >>> matrix_for_c(q, None, torch.ones(2))[2]
    tensor([-1,  7], dtype=torch.int32)
    """
    if scale is None:
        return [weight, None, None, bias]
    return [weight, scale, weight.sum(dim=1, dtype=torch.int32), bias]


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def layer_pointers(layer: dict[str, Sequence[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """One layer's tensors in the order ``decode_step.c`` reads them (``minigpt.fast.layout.LAYER``).

    ``layer`` maps each of ``LAYER``'s names to its tensors: a norm's (weight, bias), a matrix as
    ``matrix_for_c`` gives it, the cache as a 1-tuple.

    >>> w = torch.zeros(2)
    >>> len(layer_pointers({name: [w] * n for name, n in layout.LAYER})) == layout.PER_LAYER
    True
    """
    if list(layer) != [name for name, _ in layout.LAYER]:
        raise ValueError(f"a layer must hold {', '.join(name for name, _ in layout.LAYER)} in this order, "
                         f"got {', '.join(layer)}")
    for name, n in layout.LAYER:
        if len(layer[name]) != n:
            raise ValueError(f"a layer's {name} is {n} tensors (or None), got {len(layer[name])}")
    return [t for tensors in layer.values() for t in tensors]


class NativeStep:
    """``decode_step.c`` bound to one decoder's tensors: call it with (B, T) tokens to get (B, V) logits.

    ``layers`` holds, per layer, a dict of its tensors by ``minigpt.fast.layout.LAYER``'s names
    (``layer_pointers``): a matrix is its (out, in) weights, then for int8 its per-row float32 scales and
    int32 sums of weights (``matrix_for_c``), else None and None, then its bias; the ``cache`` is
    (max_batch, max_len, 2C). ``head`` (V, C) is the output layer: the token table, or its copy in the
    matrices' format (int8 with ``head_scale`` and ``head_row_sum``). ``format`` (``layout.FORMATS``) says
    how every matrix and the head store their weights: "f32" float32, "int8", "fp16" float16, "bf16"
    bfloat16, or GGUF's blocks, "q8_0" and "q4_0" (uint8 (out, bytes): ``minigpt.quantize.gguf_blocks``'s
    bytes); None: "int8" where ``head_scale`` is given, else "f32". ``activations`` (``ACTIVATIONS``) is what
    Q8_0 and Q4_0 matrices multiply: their float32 inputs, or ("q8_0") those rounded to Q8_0 blocks
    (llama.cpp's arithmetic). ``wte`` (V, C) is float32 whatever the
    format: the lookup reads one row per token. All contiguous, on CPU. int8 matrices quantize
    their input as fbgemm's dynamic kernel does, over [0, ``qmax``]: 255, or 127 where fbgemm reduces the
    range (``Int8Linear.reduce_range``), so the C step and ``minigpt.quantize``'s "dynamic" kernel agree.
    The tensors must stay where they are for the life of this object: their addresses are read once, here,
    into the ``StepArgs`` every call passes.

    >>> from minigpt.fast import FastDecoder
    >>> from minigpt.model import GPT, GPTConfig
    >>> decoder = FastDecoder(GPT(GPTConfig.from_preset("tiny")), max_batch_size=1, max_len=8, matmul="native")
    >>> isinstance(decoder.native_step, NativeStep)
    True
    """

    def __init__(self, layers: list[dict[str, Sequence[torch.Tensor | None]]], wte: torch.Tensor,
                 wpe: torch.Tensor, ln_f: tuple[torch.Tensor, torch.Tensor], head: torch.Tensor,
                 head_scale: torch.Tensor | None, head_row_sum: torch.Tensor | None, n_head: int,
                 max_batch_size: int, max_len: int, qmax: int = 255, *, format: str | None = None,
                 activations: str = "float32") -> None:
        format = ("int8" if head_scale is not None else "f32") if format is None else format
        check_choice("format", format, layout.FORMATS)
        check_choice("activations", activations, ACTIVATIONS)
        lib = load()
        per_layer = [t for layer in layers for t in layer_pointers(layer)]
        tables = [wte, wpe, *ln_f, head, head_scale, head_row_sum]
        for t in per_layer + tables:
            if t is not None and (t.dtype not in READABLE or t.device.type != "cpu" or not t.is_contiguous()):
                raise ValueError(f"the C decode step reads contiguous {', '.join(map(str, READABLE[:-1]))} or "
                                 f"{READABLE[-1]} CPU tensors, got {t.dtype} on {t.device} with strides {t.stride()}")
        self.lib, self.kept = lib, per_layer + tables  # the C side holds their addresses
        self.pointers = (ctypes.c_void_p * len(per_layer))(*map(_address, per_layer))
        self.n_layer, self.n_head, self.max_len, self.qmax = len(layers), n_head, max_len, qmax
        self.max_batch_size = max_batch_size
        self.C, self.vocab = wte.shape[1], head.shape[0]
        self.threads = torch.get_num_threads()
        self.work = torch.empty(lib.work_floats(max_batch_size, self.C, n_head, max_len, self.threads))  # scratch
        self.args = layout.StepArgs(  # what stays the same from step to step; __call__ fills in the rest
            layers=ctypes.addressof(self.pointers), n_layer=self.n_layer, wte=wte.data_ptr(), wpe=wpe.data_ptr(),
            ln_f_w=ln_f[0].data_ptr(), ln_f_b=ln_f[1].data_ptr(), head=head.data_ptr(),
            head_scale=_address(head_scale), head_row_sum=_address(head_row_sum), C=self.C, n_head=n_head,
            vocab=self.vocab, max_len=max_len, format=layout.FORMATS.index(format),
            activations=ACTIVATIONS.index(activations), qmax=qmax,
        )

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, pos: int,
                 key_ok: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, V) of each row's last token, for ``tokens`` (B, T) at ``positions`` (B, T), written to
        cache positions [pos, pos + T). T = 1 is a decode step; a larger T is a prompt's pass, each token
        computed as a step of its own would compute it, with every matrix read once for all of them.

        ``key_ok`` (B * T, max_len) bool marks the cache positions each token may see (row r's token t is
        r * T + t); None: all of them.
        """
        B, T = tokens.shape
        tokens, positions = tokens.contiguous(), positions.contiguous()
        logits = torch.empty(B, self.vocab)
        threads = min(torch.get_num_threads(), self.threads)
        work = self.work
        if B * T > self.max_batch_size:  # a prompt's pass: scratch for all its tokens, for this call only
            work = torch.empty(self.lib.work_floats(B * T, self.C, self.n_head, self.max_len, threads))
        a = self.args
        a.tokens, a.positions, a.key_ok = tokens.data_ptr(), positions.data_ptr(), _address(key_ok)
        a.B, a.T, a.pos, a.logits, a.work, a.n_threads = B, T, pos, logits.data_ptr(), work.data_ptr(), threads
        self.lib.decode_step(ctypes.addressof(a))
        return logits
