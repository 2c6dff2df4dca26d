"""The key/value cache: remember each layer's keys and values so each new token costs one position.

Without a cache, step t of generation recomputes attention for all t tokens. Keys and values of earlier
tokens never change (causal attention: a token only sees its past), so we keep them. Buffers are allocated
once at full size, ``(B, n_head, max_len, head_size)`` per layer, and written in place: no tensor grows
or is re-allocated while decoding.

>>> cache = KVCache(n_layer=2, batch_size=1, n_head=4, max_len=8, head_size=16)
>>> cache.nbytes == KVCache.bytes_needed(n_layer=2, batch_size=1, max_len=8, n_embd=64)
True
"""

from __future__ import annotations

import os

import torch


class KVCache:
    """Pre-allocated keys and values for every layer, filled from position 0 up to ``length``."""

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, n_head, max_len, head_size)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.max_len = max_len
        self.length = 0  # positions filled so far; the same for every layer and row

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int | None = None) -> KVCache:
        """A cache shaped for ``model`` (a ``GPT``), on its device and dtype.

        >>> from minigpt.model import GPT, GPTConfig
        >>> KVCache.for_model(GPT(GPTConfig.from_preset("tiny")), batch_size=2).keys[0].shape
        torch.Size([2, 4, 128, 16])
        """
        c = model.config
        p = model.transformer.wte.weight
        return cls(
            c.n_layer,
            batch_size,
            c.n_head,
            max_len or c.block_size,
            c.n_embd // c.n_head,
            dtype=p.dtype,
            device=p.device,
        )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new (B, nh, T, hs) keys and values after the filled part; return all of them so far."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, max_len is {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as filled (the model calls this after all layers wrote them)."""
        self.length += n

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding drops rejected tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length must be in [0, {self.length}], got {length}")
        self.length = length  # stale entries past `length` are simply overwritten later

    def reorder(self, index: torch.Tensor) -> None:
        """Make row i a copy of row ``index[i]`` (beam search keeps the cache of each beam's parent)."""
        for layer in range(len(self.keys)):
            self.keys[layer] = self.keys[layer].index_select(0, index)
            self.values[layer] = self.values[layer].index_select(0, index)

    @property
    def nbytes(self) -> int:
        """Bytes held by all the buffers."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    @staticmethod
    def bytes_needed(
        n_layer: int, batch_size: int, max_len: int, n_embd: int, dtype: torch.dtype = torch.float32
    ) -> int:
        """Memory for a cache: 2 (keys and values) · layers · B · T · width · bytes per number.

        >>> KVCache.bytes_needed(n_layer=12, batch_size=1, max_len=1024, n_embd=768) / 2**20
        72.0
        """
        bytes_per_number = torch.tensor([], dtype=dtype).element_size()
        return 2 * n_layer * batch_size * max_len * n_embd * bytes_per_number


# Numbers alive per position and per unit of width at the busiest moment of a pass through a block: the
# residual stream and its layer norm (2), the MLP's hidden layer before and after GELU (4 + 4); attention's
# moment (q, k, v and their per-head copies, 6, plus the output) is smaller. Attention's scores and their
# softmax add 2 numbers per head and key on top (``peak_bytes``).
ACTIVATION_FACTOR = 10
# fp32 copies of the (rows, V) next-token logits alive in one decoding step, besides the model's own output:
# the transformed scores, the probabilities and the log-probabilities (beam search: the log-probs, the
# beams' running totals added to them, and the candidates' scores).
LOGIT_COPIES = 3


def peak_bytes(
    model: torch.nn.Module,
    rows: int,
    max_len: int,
    *,
    prompt_rows: int,
    prompt_len: int,
    use_cache: bool = True,
    all_positions: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[str, int]:
    """Bytes a decoding run allocates at its peak: ``{"cache": …, "logits": …, "activations": …}``.

    ``rows`` sequences of up to ``max_len`` positions are decoded from ``prompt_rows`` prompts of
    ``prompt_len`` tokens (the prompt's pass runs once per prompt, then its rows are copied). Two moments
    compete, each on top of the KV cache (``use_cache``; all rows, ``max_len`` positions, in ``dtype``,
    the model's by default):

    - the prompt's pass: activations of every prompt position (``ACTIVATION_FACTOR`` · width, plus
      attention's scores), and its logits over the vocabulary (every position's with ``all_positions``,
      as when the model is not asked for the last one only; else one per row);
    - a decoding step: the (rows, V) logits and their ``LOGIT_COPIES`` fp32 copies, and one position's
      activations per row (without a cache, each step is a prompt's pass over all rows and ``max_len``).

    The larger moment counts; small tensors (token ids, masks, per-row scores) are left out.

    >>> from minigpt.model import GPT, GPTConfig
    >>> peak = peak_bytes(GPT(GPTConfig.from_preset("tiny")), 10**6, 4, prompt_rows=1, prompt_len=1)
    >>> peak["logits"] / 1e9  # 10**6 rows × 50257 tokens × (4 bytes + 3 fp32 copies)
    804.112
    """
    c, p = model.config, model.transformer.wte.weight
    dtype = p.dtype if dtype is None else dtype
    size = torch.tensor([], dtype=dtype).element_size()
    V = c.vocab_size
    cache = KVCache.bytes_needed(c.n_layer, rows, max_len, c.n_embd, dtype) if use_cache else 0

    def activations(n_rows: int, positions: int, keys: int) -> int:
        return n_rows * positions * (ACTIVATION_FACTOR * c.n_embd + 2 * c.n_head * keys) * size

    pass_rows, pass_len = (prompt_rows, prompt_len) if use_cache else (rows, max_len)
    prompt = dict(activations=activations(pass_rows, pass_len, pass_len),
                  logits=pass_rows * (pass_len if all_positions else 1) * V * size)
    step = dict(activations=activations(rows, 1, max_len) if use_cache else prompt["activations"],
                logits=rows * V * (size + LOGIT_COPIES * 4))
    busiest = max(prompt, step, key=lambda moment: moment["activations"] + moment["logits"])
    return dict(cache=cache, **busiest)


def check_memory_fits(
    model: torch.nn.Module,
    rows: int,
    max_len: int,
    what: str,
    *,
    lower: str = "one of them, or max_new_tokens",
    **moments: object,
) -> None:
    """Refuse, before allocating anything, a run whose peak (``peak_bytes``) exceeds the free memory.

    ``what`` names the setting the rows come from (``"num_beams=4 × batch size 2 = 8 rows"``) and
    ``lower`` what to lower, for the message; ``moments`` are ``peak_bytes``' keywords. Without this check
    a huge beam count or batch fails deep inside torch a minute later, or makes the machine swap first.
    Where the free memory cannot be told (``available_memory`` gives None) nothing is refused.

    >>> from minigpt.model import GPT, GPTConfig
    >>> check_memory_fits(GPT(GPTConfig.from_preset("tiny")), 10**9, 128,
    ...                   "num_beams=10**9 × batch size 1 = 10**9 rows", prompt_rows=1, prompt_len=1)
    Traceback (most recent call last):
        ...
    ValueError: num_beams=10**9 × batch size 1 = 10**9 rows need 941840.0 GB at the peak of decoding (KV cache ...
    """
    p = model.transformer.wte.weight
    peak = peak_bytes(model, rows, max_len, **moments)
    needed, available = sum(peak.values()), available_memory(p.device)
    if available is not None and needed > available:
        cache = (f"KV cache {peak['cache'] / 1e9:.1f} GB for {max_len} positions each" if peak["cache"]
                 else "no KV cache")
        raise ValueError(
            f"{what} need {needed / 1e9:.1f} GB at the peak of decoding ({cache}, logits over the "
            f"{model.config.vocab_size}-token vocabulary {peak['logits'] / 1e9:.1f} GB, "
            f"activations {peak['activations'] / 1e9:.1f} GB), more than the "
            f"{available / 1e9:.1f} GB of memory available on {p.device}; lower {lower}"
        )


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on ``device``, or None where we cannot tell.

    CUDA: free device memory plus what torch's allocator holds unused. CPU (and MPS, which shares it):
    psutil's estimate if installed, else Linux's ``MemAvailable`` (free memory plus caches the kernel
    can drop), else the machine's total physical memory: an upper bound, still enough to refuse the
    impossible.

    >>> available_memory("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type not in ("cpu", "mps"):
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or the names are unknown
        return None
