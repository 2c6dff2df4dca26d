"""A small serving engine: many requests share one model, one KV pool, and every forward pass.

``generate`` decodes one batch from start to end. A server meets requests that arrive at any time, with
prompts and answers of any length. Three ideas from vLLM make it efficient, each a piece of this module:

- **Paged KV cache.** The keys and values live in a pool of fixed-size blocks (``block_size`` tokens each);
  a sequence owns a ``BlockTable`` (its list of block ids) and takes a new block only when the last is full.
  Memory follows the tokens actually written, where a contiguous cache reserves ``prompt + max_new_tokens``
  positions per request up front (the report compares the two, in tokens).
- **Continuous batching.** ``schedule`` decides each step which waiting requests join (first come, first
  served, while blocks are free and the batch has room) and which running ones must leave; finished
  requests leave at once and free their blocks. ``policy="static"`` is the old way for comparison: a batch
  runs until its LAST request finishes, and only then are new ones admitted.
- **Prefix sharing.** Prompts that start with the same tokens (a system prompt) reuse the blocks that hold
  them (a reference count per block); a sequence that must write into a shared block copies it first
  (copy on write). A block is offered for sharing once its prompt pass has written it, so prompts admitted
  in the same step do not share with each other (a static batch, admitted at once, shares nothing).

One step runs ONE forward pass over every running sequence, prompts and decode steps together in one
padded batch: a newly admitted sequence feeds its whole prompt, a decoding one its last token, and the rows
are padded to the longest. We chose this over "prefill, then decode, in turns" because it is one code
path, and a decode step never waits for another request's prompt pass; the price is the padding (a decode
row padded to a prompt's length), which real servers avoid with variable-length attention kernels and by
cutting long prompts into chunks (chunked prefill).

When the pool is full, the newest running request is preempted by **recompute**: its blocks are freed and
it goes back to the FRONT of the queue with the tokens it generated, and its prompt + those tokens are run
again when it is re-admitted. We recompute rather than swap the blocks out to CPU memory because a prompt
pass runs all its tokens in parallel (one step, where generating them took one step per token), swapping
needs a second memory and copies both ways, and the code stays small; vLLM's V1 engine recomputes by
default for the same reasons.

Each request chooses its tokens exactly as ``generate`` does (``generate._pick``: its own logits chain, a
softmax in float32, ``torch.multinomial`` on its own (1, V) row with its own generator), so a request's
tokens equal ``generate(model, prompt, ...)`` run alone (up to batched-vs-alone rounding, see the tests).

>>> from minigpt.model import GPT, GPTConfig
>>> model = GPT(GPTConfig.from_preset("tiny"))
>>> engine = Engine(model, num_blocks=8, block_size=4)
>>> first, second = engine.add_request([6109, 3626], max_new_tokens=3), engine.add_request("Hi", max_new_tokens=2)
>>> while engine.has_work:
...     _ = engine.step()
>>> [len(engine.results[i].tokens) for i in (first, second)]
[3, 2]
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minigpt import logits as L
from minigpt.checks import check_choice, check_int, check_model, check_real, check_type
from minigpt.generate import DecodingSettings, encode_prompt, eval_mode, make_generator
from minigpt.model import GPT
from minigpt.tokenizer import VOCAB_SIZE

POLICIES = ("continuous", "static")


# --- Blocks ---------------------------------------------------------------------------------------------------


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """How many blocks of ``block_size`` tokens hold ``num_tokens`` tokens (rounded up).

    >>> blocks_needed(0, 4), blocks_needed(4, 4), blocks_needed(5, 4)
    (0, 1, 2)
    """
    return -(-num_tokens // block_size)


class BlockAllocator:
    """Hands out block ids of a pool of ``num_blocks`` blocks and counts how many sequences use each one.

    ``allocate`` gives the lowest free id (refcount 1), ``share`` adds a user, ``free`` removes one; a block
    goes back to the free list when its last user frees it.

    >>> pool = BlockAllocator(3)
    >>> a, b = pool.allocate(), pool.allocate()
    >>> pool.share(a); pool.free(a); pool.refcount(a), pool.num_free
    (1, 1)
    >>> pool.free(a); pool.allocate()
    0
    """

    def __init__(self, num_blocks: int) -> None:
        check_int("num_blocks", num_blocks, 1)
        self.num_blocks = num_blocks
        self._refcounts = [0] * num_blocks
        self._free = list(range(num_blocks))  # kept sorted: lowest id first makes runs easy to follow

    @property
    def num_free(self) -> int:
        """Blocks no sequence uses."""
        return len(self._free)

    def allocate(self) -> int:
        """Take the lowest free block (refcount 1); RuntimeError when every block is in use."""
        if not self._free:
            raise RuntimeError(f"no free block: all {self.num_blocks} blocks are in use")
        block = self._free.pop(0)
        self._refcounts[block] = 1
        return block

    def share(self, block: int) -> None:
        """One more sequence uses ``block`` (which must be in use already)."""
        self._check_used(block)
        self._refcounts[block] += 1

    def free(self, block: int) -> None:
        """One sequence stops using ``block``; the last one gives it back to the free list."""
        self._check_used(block)
        self._refcounts[block] -= 1
        if self._refcounts[block] == 0:
            self._free.append(block)
            self._free.sort()

    def refcount(self, block: int) -> int:
        """How many sequences use ``block`` (0: free)."""
        check_int("block", block, 0, high=self.num_blocks - 1)
        return self._refcounts[block]

    def _check_used(self, block: int) -> None:
        if self.refcount(block) == 0:
            raise ValueError(f"block must be a block in use, got {block} (it is free)")


@dataclass
class BlockTable:
    """One sequence's blocks, in order, and how many of its tokens have keys and values in them.

    Token ``position`` lives in block ``blocks[position // block_size]`` at offset ``position % block_size``.

    >>> table = BlockTable(4, blocks=[7, 2])
    >>> table.slot(5), table.capacity
    ((2, 1), 8)
    """

    block_size: int
    blocks: list[int] = field(default_factory=list)
    num_tokens: int = 0

    @property
    def capacity(self) -> int:
        """Tokens the blocks can hold."""
        return len(self.blocks) * self.block_size

    def slot(self, position: int) -> tuple[int, int]:
        """(block id, offset in it) of token ``position``."""
        check_int("position", position, 0, high=self.capacity - 1)
        return self.blocks[position // self.block_size], position % self.block_size


# --- The scheduler's decision ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One step's decision: admit the first ``admit`` waiting requests, preempt these running indices."""

    admit: int
    preempt: list[int]


def schedule(
    waiting: list[int], running: list[int], freed: list[int], *, num_free: int, max_batch_size: int,
    policy: str = "continuous",
) -> Schedule:
    """Decide one step from plain numbers of blocks; ``Engine.step`` applies the decision.

    ``waiting[j]``: blocks the j-th waiting request (queue order) needs to start. ``running[i]``: blocks
    the i-th running request (oldest first) needs for this step. ``freed[i]``: blocks preempting it gives
    back. Running requests come first: while they need more than is free, the NEWEST is preempted (it has
    waited least and done least work), never the oldest (any one request fits the pool alone). A step that
    preempts admits nobody: memory is short. Then waiting requests are admitted first come, first served,
    while the batch has room and their blocks fit; the first that does not fit stops the admission (no
    overtaking, so a long prompt cannot starve). ``policy="static"`` admits only when nothing runs.

    >>> schedule([1, 2], [1, 1], [3, 3], num_free=3, max_batch_size=4)
    Schedule(admit=1, preempt=[])
    >>> schedule([2], [1, 1, 1], [3, 2, 2], num_free=1, max_batch_size=4)
    Schedule(admit=0, preempt=[2])
    """
    check_choice("policy", policy, POLICIES)
    check_int("num_free", num_free, 0)
    check_int("max_batch_size", max_batch_size, 1)
    if len(freed) != len(running):
        raise ValueError(f"freed must hold one number per running request ({len(running)}), got {freed!r}")
    need, free, preempt = sum(running), num_free, []
    for i in reversed(range(1, len(running))):  # newest first, the oldest never
        if need <= free:
            break
        preempt.append(i)
        need, free = need - running[i], free + freed[i]
    if preempt or (policy == "static" and running):
        return Schedule(0, preempt)
    admit, batch = 0, len(running)
    for blocks in waiting:
        if batch >= max_batch_size or need + blocks > free:
            break
        admit, batch, need = admit + 1, batch + 1, need + blocks
    return Schedule(admit, preempt)


# --- Requests and what the engine reports ----------------------------------------------------------------------


@dataclass
class RequestResult:
    """What happened to one request; times in seconds on the engine's clock (since the run started)."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    arrival: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None
    stopped_by: str | None = None  # "eos", or None (max_new_tokens, or not finished)
    preemptions: int = 0


@dataclass
class _Sequence:
    """A request inside the engine: its settings, random generator, blocks and result so far."""

    id: int
    settings: DecodingSettings
    rng: torch.Generator | None
    result: RequestResult
    table: BlockTable

    @property
    def ids(self) -> list[int]:
        """Prompt and generated tokens: what the keys and values must cover."""
        return self.result.prompt + self.result.tokens


@dataclass(frozen=True)
class StepRecord:
    """One engine step: when it ended, who joined, who was preempted, the token each request made, who ended.

    ``blocks_in_use`` is the paged cache's memory during the step's forward pass; ``contiguous_tokens`` what
    contiguous caches would reserve for the same running requests (prompt + max_new_tokens each, its smallest honest
    reservation: the model's block_size would be larger still).
    """

    time: float
    admitted: list[int]
    preempted: list[int]
    tokens: dict[int, int]
    finished: list[int]
    blocks_in_use: int
    contiguous_tokens: int


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: when it arrives (seconds after the start) and what it asks for."""

    arrival: float
    prompt: list[int]
    max_new_tokens: int
    logits: L.LogitsSettings | None = None
    do_sample: bool = False
    seed: int | None = None
    eos_token_id: int | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, interpolating linearly between readings (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.95)
    (2.5, 3.85)
    """
    check_real("q", q, "in [0, 1]", lambda v: 0 <= v <= 1)
    if not values:
        raise ValueError("values must hold at least one number, got none")
    return round(torch.quantile(torch.tensor(values, dtype=torch.float64), q).item(), 12)


@dataclass
class ServingReport:
    """A run's requests and steps, and the numbers a server is judged by.

    TTFT (time to first token) = first token time - arrival; TPOT (time per output token) = (finish - first
    token time) / (tokens - 1), over requests with at least two tokens.
    """

    requests: list[RequestResult]
    steps: list[StepRecord]
    block_size: int

    @property
    def duration(self) -> float:
        """From the first arrival to the last finish, in seconds."""
        return max(r.finish_time for r in self.requests) - min(r.arrival for r in self.requests)

    @property
    def num_generated(self) -> int:
        """Tokens generated by all requests."""
        return sum(len(r.tokens) for r in self.requests)

    @property
    def throughput(self) -> float:
        """Generated tokens per second over the run."""
        return self.num_generated / self.duration

    def ttft(self, q: float = 0.5) -> float:
        """The ``q`` quantile of the time to first token, in seconds."""
        return percentile([r.first_token_time - r.arrival for r in self.requests], q)

    def tpot(self, q: float = 0.5) -> float:
        """The ``q`` quantile of the time per output token after the first, in seconds."""
        gaps = [(r.finish_time - r.first_token_time) / (len(r.tokens) - 1) for r in self.requests if len(r.tokens) > 1]
        return percentile(gaps, q)

    @property
    def peak_blocks(self) -> int:
        """The most blocks in use after any step."""
        return max(s.blocks_in_use for s in self.steps)

    def summary(self) -> str:
        """The numbers on a few lines."""
        peak_paged = self.peak_blocks * self.block_size
        peak_contiguous = max(s.contiguous_tokens for s in self.steps)
        return (
            f"{len(self.requests)} requests, {self.num_generated} tokens in {self.duration:.3g} s: "
            f"{self.throughput:.3g} tokens/s\n"
            f"TTFT p50 {self.ttft(0.5):.3g} s, p95 {self.ttft(0.95):.3g} s; "
            f"TPOT p50 {self.tpot(0.5):.3g} s, p95 {self.tpot(0.95):.3g} s\n"
            f"peak KV memory: {peak_paged} token slots paged vs {peak_contiguous} contiguous"
        )


# --- Choosing a token ---------------------------------------------------------------------------------------------


def pick_token(
    logits: torch.Tensor, ids: torch.Tensor, step: int, settings: DecodingSettings, rng: torch.Generator | None
) -> int:
    """One request's next token from its logits (1, V), as ``generate`` picks it for a prompt run alone.

    ``ids`` (1, T) are the prompt and the ``step`` tokens generated so far (the penalties read them). The
    request's transforms run in float32, then the argmax, or a draw from the softmax with the request's own
    ``rng``: each request draws on its own (1, V) row, so its draws do not depend on who shares the batch.

    >>> s = DecodingSettings(max_new_tokens=1, do_sample=True, logits=L.LogitsSettings(top_k=1))
    >>> pick_token(torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[2]]), 0, s, torch.Generator().manual_seed(0))
    1
    """
    scores = settings.chain(logits.float(), ids, new_tokens=step, batch_ids=[0])  # (1, V)
    if torch.isneginf(scores).all():
        raise ValueError(f"the settings forbid every token at new token {step + 1}: loosen the filters")
    if not settings.do_sample:
        return int(scores.argmax(dim=-1))
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=rng))


# --- Paged attention -------------------------------------------------------------------------------------------


def write_slots(pool: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor, new: torch.Tensor) -> None:
    """Write ``new`` (N, nh, hs), one key (or value) per token, into ``pool`` (num_blocks, nh, bs, hs) at the
    tokens' slots: block ``blocks[i]`` (N,), offset ``offsets[i]`` (N,).

    >>> pool = torch.zeros(3, 1, 2, 1)
    >>> write_slots(pool, torch.tensor([2, 0]), torch.tensor([1, 0]), torch.tensor([[[5.0]], [[7.0]]]))
    >>> pool[:, 0, :, 0]
    tensor([[7., 0.],
            [0., 0.],
            [0., 5.]])
    """
    pool[blocks, :, offsets] = new


def read_blocks(pool: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Every row's keys (or values), in token order: ``pool`` (num_blocks, nh, bs, hs) read through ``tables``
    (B, width) of block ids gives (B, nh, width * bs, hs). Token p of row b is at index p.

    >>> pool = torch.arange(6.0).view(3, 1, 2, 1)  # block i holds 2i, 2i + 1
    >>> read_blocks(pool, torch.tensor([[2, 0]]))[0, 0, :, 0]
    tensor([4., 5., 0., 1.])
    """
    B, (_, nh, _, hs) = tables.size(0), pool.shape
    return pool[tables].transpose(1, 2).reshape(B, nh, -1, hs)  # (B, width, nh, bs, hs) -> (B, nh, K, hs)


def paged_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, tables: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Attention of queries ``q`` (B, nh, T, hs) over keys and values kept in pools (num_blocks, nh, bs, hs),
    each row reading its own blocks (``tables``, (B, width)); ``mask`` (B, 1, T, width * bs) says which key
    each query may see. The model's own attention, with the cache read through a block table.

    >>> q, pool = torch.ones(1, 1, 1, 1), torch.arange(4.0).view(2, 1, 2, 1)  # tokens 0..3: values 0..3
    >>> mask = torch.tensor([True, True, False, False]).view(1, 1, 1, 4)
    >>> paged_attention(q, pool, pool, torch.tensor([[1, 0]]), mask)  # keys 2, 3 (block 1): weights e^2, e^3
    tensor([[[[2.7311]]]])
    """
    hs = q.size(-1)
    scores = q @ read_blocks(keys, tables).transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, K)
    scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1) @ read_blocks(values, tables)  # (B, nh, T, hs)


# --- The engine -------------------------------------------------------------------------------------------------


class Engine:
    """Serve many requests with ``model``: a paged KV pool of ``num_blocks`` blocks, one forward per step.

    ``add_request`` queues a request, ``step`` runs one scheduling decision and one forward pass, ``run``
    plays a trace of timed arrivals against ``clock`` and returns a ``ServingReport``. The pool holds, per
    layer, keys and values of shape (num_blocks, n_head, block_size, head_size) in the model's dtype.

    >>> from minigpt.model import GPT, GPTConfig
    >>> engine = Engine(GPT(GPTConfig.from_preset("tiny")), num_blocks=4, block_size=8, max_batch_size=2)
    >>> engine.keys[0].shape
    torch.Size([4, 4, 8, 16])
    >>> Engine(GPT(GPTConfig.from_preset("tiny")), num_blocks=4, policy="fifo")
    Traceback (most recent call last):
        ...
    ValueError: policy must be one of continuous, static, got 'fifo'
    """

    def __init__(
        self, model: GPT, *, num_blocks: int, block_size: int = 16, max_batch_size: int = 8,
        share_prefixes: bool = True, policy: str = "continuous", clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_model("model", model)
        check_int("num_blocks", num_blocks, 1)
        check_int("block_size", block_size, 1)
        check_int("max_batch_size", max_batch_size, 1)
        check_type("share_prefixes", share_prefixes, bool, "True or False")
        check_choice("policy", policy, POLICIES)
        self.model, self.block_size, self.max_batch_size = model, block_size, max_batch_size
        self.share_prefixes, self.policy, self.clock = share_prefixes, policy, clock
        config, weight = model.config, model.transformer.wte.weight
        shape = (num_blocks, config.n_head, block_size, config.n_embd // config.n_head)
        self.keys = [weight.new_zeros(shape) for _ in range(config.n_layer)]
        self.values = [weight.new_zeros(shape) for _ in range(config.n_layer)]
        self.allocator = BlockAllocator(num_blocks)
        self.prefixes: dict[tuple[int, ...], int] = {}  # tokens up to a block's end -> the block holding them
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []  # oldest first
        self.results: dict[int, RequestResult] = {}
        self.num_shared = 0  # blocks a prompt reused from the prefix cache instead of computing them
        self.num_copied = 0  # copies on write
        self.start = clock()

    @property
    def has_work(self) -> bool:
        """Requests wait or run."""
        return bool(self.waiting or self.running)

    def now(self) -> float:
        """Seconds since the engine (or its last run) started, on its clock."""
        return self.clock() - self.start

    def add_request(
        self, prompt: str | list[int], *, max_new_tokens: int, logits: L.LogitsSettings | None = None,
        do_sample: bool = False, seed: int | None = None, generator: torch.Generator | None = None,
        eos_token_id: int | Sequence[int] | None = None, arrival: float | None = None,
    ) -> int:
        """Queue a request; returns its id (0, 1, 2 … in order). Settings as ``generate``'s.

        ``arrival`` (seconds on the engine's clock) defaults to now. The request must fit the pool alone:
        blocks for prompt + max_new_tokens tokens, at most ``num_blocks``.
        """
        ids = self._prompt_ids(prompt)
        check_int("max_new_tokens", max_new_tokens, 1)
        settings = DecodingSettings(max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=eos_token_id,
                                    logits=logits if logits is not None else L.LogitsSettings())
        total, context = len(ids) + max_new_tokens, self.model.config.block_size
        if total > context:
            raise ValueError(f"prompt + max_new_tokens must be <= the model's context of {context} tokens, got "
                             f"{len(ids)} + {max_new_tokens} = {total}")
        if blocks_needed(total, self.block_size) > self.allocator.num_blocks:
            raise ValueError(
                f"prompt + max_new_tokens must fit the pool of {self.allocator.num_blocks} blocks of "
                f"{self.block_size} tokens, got {len(ids)} + {max_new_tokens} = {total} tokens")
        if arrival is not None:
            check_real("arrival", arrival, "a finite number >= 0", lambda v: 0 <= v < math.inf)
        rng = make_generator(seed, generator, self.keys[0].device)
        result = RequestResult(ids, arrival=self.now() if arrival is None else float(arrival))
        sequence = _Sequence(len(self.results), settings, rng, result, BlockTable(self.block_size))
        self.results[sequence.id] = result
        self.waiting.append(sequence)
        return sequence.id

    def _prompt_ids(self, prompt: object) -> list[int]:
        if isinstance(prompt, str):
            return encode_prompt(prompt)
        check_type("prompt", prompt, list, "a str or a non-empty list of token ids")
        vocab = self.model.config.vocab_size
        if not prompt or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt must be a str or a non-empty list of token ids in [0, {vocab}), got {prompt!r}")
        return list(prompt)

    # -- one step --

    @torch.inference_mode()
    def step(self) -> StepRecord:
        """Schedule, run one forward pass over the running requests, pick one token each, retire the finished."""
        admitted, preempted = self._schedule()
        # memory while the forward runs: the paged pool's blocks vs what contiguous caches would reserve
        blocks_in_use = self.allocator.num_blocks - self.allocator.num_free
        contiguous = sum(len(s.result.prompt) + s.settings.max_new_tokens for s in self.running)
        tokens, finished = {}, []
        if self.running:
            with eval_mode(self.model):
                logits = self.forward(self.running)  # (B, V)
            now = self.now()
            for row, seq in enumerate(self.running):
                token = self._choose(seq, logits[row : row + 1])
                tokens[seq.id] = token
                if seq.result.first_token_time is None:
                    seq.result.first_token_time = now
                if token in seq.settings.eos_token_ids:
                    seq.result.stopped_by = "eos"
                if seq.result.stopped_by or len(seq.result.tokens) == seq.settings.max_new_tokens:
                    seq.result.finish_time = now
                    finished.append(seq.id)
                    self._release(seq)
            self.running = [seq for seq in self.running if seq.id not in finished]
        return StepRecord(self.now(), admitted, preempted, tokens, finished, blocks_in_use, contiguous)

    def _schedule(self) -> tuple[list[int], list[int]]:
        """Ask ``schedule``, then apply its answer: preempt, admit, and give every running sequence its blocks."""
        waiting = [self._blocks_to_start(seq) for seq in self.waiting]
        running = [self._blocks_to_grow(seq) for seq in self.running]
        freed = [sum(self.allocator.refcount(b) == 1 for b in seq.table.blocks) for seq in self.running]
        decision = schedule(waiting, running, freed, num_free=self.allocator.num_free,
                            max_batch_size=self.max_batch_size, policy=self.policy)
        preempted = [self.running[i] for i in decision.preempt]
        for seq in preempted:  # newest first, so appendleft keeps their order at the front of the queue
            self._release(seq)
            seq.result.preemptions += 1
            self.running.remove(seq)
            self.waiting.appendleft(seq)
        for seq in self.running:
            self._grow(seq)
        admitted = [self.waiting.popleft() for _ in range(decision.admit)]
        for seq in admitted:  # share, then copy at once the shared block it writes into (before the next shares)
            self._share_prefix(seq)
            self._grow(seq)
        self.running += admitted
        return [s.id for s in admitted], [s.id for s in preempted]

    def _shared_blocks(self, seq: _Sequence) -> list[int]:
        """The cached blocks that already hold keys and values for the start of ``seq``'s tokens.

        Block i is looked up by all the tokens up to its end (a key depends on every earlier token). The
        last token is always run again (its logits pick the next token), so only the blocks covering the
        first len - 1 tokens count; a block holding more tokens than that is shared, and copied on write.
        """
        if not self.share_prefixes:
            return []
        ids, bs, blocks = seq.ids, self.block_size, []
        for i in range(blocks_needed(len(ids) - 1, bs)):
            block = self.prefixes.get(tuple(ids[: min((i + 1) * bs, len(ids))]))
            if block is None:
                break
            blocks.append(block)
        return blocks

    def _blocks_to_start(self, seq: _Sequence) -> int:
        """New blocks a waiting sequence takes when admitted (a shared block it writes into counts: copied)."""
        shared = self._shared_blocks(seq)
        written_from = min(len(shared) * self.block_size, len(seq.ids) - 1)
        copies = int(written_from < len(shared) * self.block_size)
        return blocks_needed(len(seq.ids), self.block_size) - len(shared) + copies

    def _blocks_to_grow(self, seq: _Sequence) -> int:
        """New blocks a running sequence takes this step: one when its last is full, one per shared block to copy."""
        position = seq.table.num_tokens  # the token it writes this step
        if position >= seq.table.capacity:
            return 1
        return int(self.allocator.refcount(seq.table.blocks[position // self.block_size]) > 1)

    def _share_prefix(self, seq: _Sequence) -> None:
        shared = self._shared_blocks(seq)
        for block in shared:
            self.allocator.share(block)
        self.num_shared += len(shared)
        seq.table = BlockTable(self.block_size, list(shared), min(len(shared) * self.block_size, len(seq.ids) - 1))

    def _grow(self, seq: _Sequence) -> None:
        """Give ``seq`` the blocks for the tokens it writes this step, copying a shared block it writes into."""
        first, end, bs = seq.table.num_tokens, len(seq.ids), self.block_size
        i = first // bs
        if i < len(seq.table.blocks) and self.allocator.refcount(seq.table.blocks[i]) > 1:  # copy on write
            old, new = seq.table.blocks[i], self.allocator.allocate()
            for pool in self.keys + self.values:
                pool[new] = pool[old]
            self.allocator.free(old)
            seq.table.blocks[i] = new
            self.num_copied += 1
        while seq.table.capacity < end:
            seq.table.blocks.append(self.allocator.allocate())

    def _release(self, seq: _Sequence) -> None:
        """Free ``seq``'s blocks; a block nobody uses any more leaves the prefix cache."""
        for block in seq.table.blocks:
            self.allocator.free(block)
            if self.allocator.refcount(block) == 0:
                self.prefixes = {k: b for k, b in self.prefixes.items() if b != block}
        seq.table = BlockTable(self.block_size)

    def _choose(self, seq: _Sequence, logits: torch.Tensor) -> int:
        """Pick ``seq``'s next token from its (1, V) logits and record it."""
        ids = torch.tensor([seq.ids], device=logits.device)
        token = pick_token(logits, ids, len(seq.result.tokens), seq.settings, seq.rng)
        seq.result.tokens.append(token)
        return token

    # -- the forward pass through the pool --

    def forward(self, sequences: list[_Sequence]) -> torch.Tensor:
        """Next-token logits (B, V) of ``sequences``, each feeding the tokens the pool does not hold yet.

        Row b feeds tokens ``num_tokens`` … len(ids) - 1 of its sequence (a whole prompt, or one token),
        padded on the right to the longest row. Each layer writes the new keys and values into the pool
        at their slots, then reads every row's keys and values back through its block table.
        """
        model, bs = self.model, self.block_size
        device = self.keys[0].device
        starts = [s.table.num_tokens for s in sequences]
        lengths = [len(s.ids) - start for s, start in zip(sequences, starts)]
        B, T = len(sequences), max(lengths)
        ids = torch.zeros(B, T, dtype=torch.long, device=device)
        for b, s in enumerate(sequences):
            ids[b, : lengths[b]] = torch.tensor(s.ids[starts[b] :], device=device)
        positions = torch.tensor(starts, device=device).unsqueeze(1) + torch.arange(T, device=device)  # (B, T)
        real = torch.arange(T, device=device) < torch.tensor(lengths, device=device).unsqueeze(1)  # (B, T)
        # the slot of every real new token: where its key and value go
        slots = [s.table.slot(p) for b, s in enumerate(sequences) for p in range(starts[b], len(s.ids))]
        write_blocks = torch.tensor([blk for blk, _ in slots], device=device)  # (N,)
        write_offsets = torch.tensor([off for _, off in slots], device=device)  # (N,)
        # every row reads its blocks; short tables are padded with block 0, hidden by the mask
        width = max(len(s.table.blocks) for s in sequences)
        tables = torch.tensor([s.table.blocks + [0] * (width - len(s.table.blocks)) for s in sequences], device=device)
        key_pos = torch.arange(width * bs, device=device)  # (K,)
        visible = key_pos.view(1, 1, -1) <= positions.unsqueeze(2)  # (B, T, K): causal, also ends at the row's length
        mask = visible.unsqueeze(1)  # (B, 1, T, K)
        # a padding query sees keys 0 … its position: no row of the mask is all False (its output is dropped)
        x = model.transformer.wte(ids) + model.transformer.wpe(positions.clamp(max=model.config.block_size - 1))
        for layer, block in enumerate(model.transformer.h):
            x = x + self._attention(block.attn, block.ln_1(x), layer, real, write_blocks, write_offsets, tables, mask)
            x = x + block.mlp(block.ln_2(x))
        for s in sequences:
            s.table.num_tokens = len(s.ids)
        self._remember_prefixes(sequences, lengths)
        last = x[torch.arange(B, device=device), torch.tensor(lengths, device=device) - 1]  # (B, C)
        return model.lm_head(model.transformer.ln_f(last))  # (B, V)

    def _attention(
        self, attn: torch.nn.Module, x: torch.Tensor, layer: int, real: torch.Tensor, write_blocks: torch.Tensor,
        write_offsets: torch.Tensor, tables: torch.Tensor, mask: torch.Tensor,
    ) -> torch.Tensor:
        """The model's attention with keys and values kept in the pool (paged attention, written plainly)."""
        B, T, C = x.shape
        nh, hs = attn.n_head, attn.head_size
        q, k, v = attn.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        # the real tokens' keys and values, (N, nh, hs), go into their slots first: a row's new queries see them
        write_slots(self.keys[layer], write_blocks, write_offsets, k.transpose(1, 2)[real])
        write_slots(self.values[layer], write_blocks, write_offsets, v.transpose(1, 2)[real])
        y = paged_attention(q, self.keys[layer], self.values[layer], tables, mask)  # (B, nh, T, hs)
        return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def _remember_prefixes(self, sequences: list[_Sequence], lengths: list[int]) -> None:
        """After a prompt pass, file its blocks under the tokens up to their ends, for later prompts to share.

        Only now: a block is shared once its keys and values are written (a copy on write needs them).
        """
        if not self.share_prefixes:
            return
        bs = self.block_size
        for s, n in zip(sequences, lengths):
            ids = s.ids
            prompt_pass = n > 1 or len(ids) == 1
            for i in range((len(ids) - n) // bs, len(s.table.blocks)):  # the blocks this step wrote into
                end = min((i + 1) * bs, len(ids))
                if prompt_pass or end == (i + 1) * bs:  # a decode step files only a block it filled
                    self.prefixes.setdefault(tuple(ids[:end]), s.table.blocks[i])

    # -- a timed run --

    def run(self, trace: Sequence[TraceRequest], *, sleep: Callable[[float], None] = time.sleep) -> ServingReport:
        """Play ``trace``: each request is added when the clock reaches its arrival; step until all finish.

        When nothing runs or waits, ``sleep`` waits for the next arrival (a test's fake clock skips ahead).
        """
        check_type("trace", trace, (list, tuple), "a list of TraceRequest")
        if not trace:
            raise ValueError("trace must hold at least one TraceRequest, got []")
        for i, request in enumerate(trace):
            check_type(f"trace[{i}]", request, TraceRequest, "a TraceRequest")
        if self.has_work:
            raise ValueError("run needs an idle engine, got one with requests still queued or running")
        pending = deque(sorted(trace, key=lambda r: r.arrival))
        first_id, steps = len(self.results), []
        self.start = self.clock()
        while pending or self.has_work:
            while pending and pending[0].arrival <= self.now():
                r = pending.popleft()
                self.add_request(r.prompt, max_new_tokens=r.max_new_tokens, logits=r.logits, do_sample=r.do_sample,
                                 seed=r.seed, eos_token_id=r.eos_token_id, arrival=r.arrival)
            if self.has_work:
                steps.append(self.step())
            elif pending:
                sleep(pending[0].arrival - self.now())
        requests = [self.results[i] for i in range(first_id, len(self.results))]
        return ServingReport(requests, steps, self.block_size)


def make_trace(
    n: int, *, seed: int, rate: float = 10.0, prompt_len: tuple[int, int] = (4, 32),
    new_tokens: tuple[int, int] = (4, 32), system_prompt: list[int] | None = None, vocab_size: int = VOCAB_SIZE,
) -> list[TraceRequest]:
    """``n`` requests with Poisson arrivals (``rate`` per second), lengths uniform in the given [low, high].

    Everything comes from one ``torch.Generator`` seeded with ``seed``. A ``system_prompt`` (token ids) starts
    every prompt, the shared prefix that prefix sharing reuses.

    >>> trace = make_trace(3, seed=0, system_prompt=[464, 318])
    >>> [r.prompt[:2] for r in trace], all(a.arrival < b.arrival for a, b in zip(trace, trace[1:]))
    ([[464, 318], [464, 318], [464, 318]], True)
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    check_real("rate", rate, "a finite number > 0", lambda v: 0 < v < math.inf)
    for name, (low, high) in (("prompt_len", prompt_len), ("new_tokens", new_tokens)):
        check_int(f"{name}[0]", low, 1)
        check_int(f"{name}[1]", high, low)
    g = torch.Generator().manual_seed(seed)
    gaps = torch.empty(n, dtype=torch.float64).exponential_(rate, generator=g)  # Poisson process: exponential gaps
    arrivals = gaps.cumsum(0).tolist()
    trace = []
    for arrival in arrivals:
        length = int(torch.randint(prompt_len[0], prompt_len[1] + 1, (1,), generator=g))
        prompt = list(system_prompt or []) + torch.randint(vocab_size, (length,), generator=g).tolist()
        max_new = int(torch.randint(new_tokens[0], new_tokens[1] + 1, (1,), generator=g))
        trace.append(TraceRequest(arrival, prompt, max_new))
    return trace
