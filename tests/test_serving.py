"""The serving engine (minigpt/serving.py): blocks, the scheduler's decision, and exactness against generate.

Exactness runs in float64 (``model.double()``): a batched row and the same row alone then agree to ~1e-15,
so neither an argmax nor a draw can flip on another CPU. The float32 check on the shipped model asserts
every step's top-2 margin first.
"""

from __future__ import annotations

import pytest
import torch

from minigpt.generate import generate
from minigpt.logits import LogitsSettings
from minigpt.model import GPT, GPTConfig
from minigpt.serving import (
    BlockAllocator,
    BlockTable,
    Engine,
    RequestResult,
    Schedule,
    ServingReport,
    StepRecord,
    TraceRequest,
    blocks_needed,
    make_trace,
    percentile,
    schedule,
)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny", n_layer=2, n_head=2, n_embd=32)).double().eval()


class FakeClock:
    """A clock that ticks 0.01 s at every reading; ``sleep`` jumps ahead: runs are deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def alone(model: GPT, r: TraceRequest) -> list[int]:
    out = generate(model, torch.tensor([r.prompt]), max_new_tokens=r.max_new_tokens, logits=r.logits,
                   do_sample=r.do_sample, seed=r.seed, eos_token_id=r.eos_token_id)
    return out.new_tokens[0]


# --- blocks ---------------------------------------------------------------------------------------------------


def test_allocator_lowest_first_refcounts_and_reuse():
    pool = BlockAllocator(3)
    assert [pool.allocate(), pool.allocate()] == [0, 1] and pool.num_free == 1
    pool.share(0)
    assert pool.refcount(0) == 2
    pool.free(0)
    assert pool.refcount(0) == 1 and pool.num_free == 1  # still used by one sequence
    pool.free(0)
    assert pool.refcount(0) == 0 and pool.num_free == 2
    assert pool.allocate() == 0  # the lowest free id comes back first
    assert pool.allocate() == 2
    with pytest.raises(RuntimeError, match=r"^no free block: all 3 blocks are in use$"):
        pool.allocate()


def test_allocator_errors():
    pool = BlockAllocator(2)
    with pytest.raises(ValueError, match=r"^block must be a block in use, got 1 \(it is free\)$"):
        pool.free(1)
    with pytest.raises(ValueError, match=r"^block must be a block in use, got 0 \(it is free\)$"):
        pool.share(0)
    with pytest.raises(ValueError, match=r"^block must be an integer between 0 and 1, got 2$"):
        pool.refcount(2)
    with pytest.raises(ValueError, match=r"^num_blocks must be an integer >= 1, got 0$"):
        BlockAllocator(0)


def test_blocks_needed_and_table_slots():
    assert [blocks_needed(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    table = BlockTable(4, blocks=[7, 2, 5])
    assert [table.slot(p) for p in (0, 3, 4, 9, 11)] == [(7, 0), (7, 3), (2, 0), (5, 1), (5, 3)]
    assert table.capacity == 12
    with pytest.raises(ValueError, match=r"^position must be an integer between 0 and 11, got 12$"):
        table.slot(12)


# --- the scheduler's decision -----------------------------------------------------------------------------------


def test_schedule_admits_first_come_first_served():
    # the second waiting request (1 block) would fit, but it may not overtake the first (3 blocks)
    assert schedule([3, 1], [1], [2], num_free=3, max_batch_size=4) == Schedule(0, [])
    assert schedule([1, 1, 1], [1], [2], num_free=4, max_batch_size=4) == Schedule(3, [])
    assert schedule([1, 1, 1], [1], [2], num_free=4, max_batch_size=2) == Schedule(1, [])  # batch room
    assert schedule([2], [], [], num_free=2, max_batch_size=1) == Schedule(1, [])


def test_schedule_preempts_newest_never_oldest_and_then_admits_nobody():
    assert schedule([1], [1, 1, 1], [2, 2, 2], num_free=2, max_batch_size=8) == Schedule(0, [2])
    assert schedule([1], [1, 1, 1], [1, 0, 0], num_free=0, max_batch_size=8) == Schedule(0, [2, 1])
    assert schedule([], [1, 1], [5, 5], num_free=0, max_batch_size=8) == Schedule(0, [1])
    assert schedule([], [3], [5], num_free=0, max_batch_size=8) == Schedule(0, [])  # the oldest stays


def test_schedule_static_admits_only_when_nothing_runs():
    assert schedule([1, 1], [0], [1], num_free=9, max_batch_size=4, policy="static") == Schedule(0, [])
    assert schedule([1, 1, 1], [], [], num_free=9, max_batch_size=2, policy="static") == Schedule(2, [])
    with pytest.raises(ValueError, match=r"^policy must be one of continuous, static, got 'fcfs'$"):
        schedule([], [], [], num_free=1, max_batch_size=1, policy="fcfs")
    with pytest.raises(ValueError, match=r"^freed must hold one number per running request \(2\), got \[1\]$"):
        schedule([], [1, 1], [1], num_free=1, max_batch_size=1)
    with pytest.raises(ValueError, match=r"^num_free must be an integer >= 0, got -1$"):
        schedule([], [], [], num_free=-1, max_batch_size=1)


# --- exactness against generate ----------------------------------------------------------------------------------


def _trace(model: GPT, seed: int, shared: bool) -> list[TraceRequest]:
    """A random trace: even requests greedy, odd ones sampled with their own seed; every third stops at an EOS
    that generate alone reaches (its second token), so EOS stops really happen."""
    system = [464, 318, 257, 1332, 286] if shared else None
    trace = make_trace(10, seed=seed, rate=30.0, prompt_len=(1, 8), new_tokens=(1, 8), system_prompt=system)
    out = []
    for i, r in enumerate(trace):
        sampled = i % 2 == 1
        r = TraceRequest(r.arrival, r.prompt, r.max_new_tokens, LogitsSettings(temperature=0.9, top_k=50)
                         if sampled else None, sampled, 1000 + i if sampled else None)
        if i % 3 == 0 and r.max_new_tokens > 2:
            eos = alone(model, r)[1]
            r = TraceRequest(r.arrival, r.prompt, r.max_new_tokens, r.logits, r.do_sample, r.seed, eos)
        out.append(r)
    return out


@pytest.mark.parametrize("policy", ["continuous", "static"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("seed, num_blocks", [(0, 6), (1, 40), (2, 6), (3, 7)])
def test_engine_tokens_equal_generate_alone(model, policy, shared, seed, num_blocks):
    trace = _trace(model, seed, shared)
    clock = FakeClock()
    engine = Engine(model, num_blocks=num_blocks, block_size=4, max_batch_size=4, share_prefixes=shared,
                    policy=policy, clock=clock)
    report = engine.run(trace, sleep=clock.sleep)
    assert [r.tokens for r in report.requests] == [alone(model, r) for r in trace]
    assert any(r.stopped_by == "eos" for r in report.requests)
    assert engine.allocator.num_free == num_blocks and not engine.prefixes  # everything given back
    assert all(s.blocks_in_use <= num_blocks for s in report.steps)
    if num_blocks <= 7 and policy == "continuous":  # small pools force preemption by recompute
        assert sum(r.preemptions for r in report.requests) > 0
    if shared and policy == "continuous":  # (a static batch is admitted in one step: nothing is filed yet)
        assert engine.num_shared > 0


def test_prefix_sharing_shares_whole_blocks_and_copies_on_write(model):
    prompt = [11, 12, 13, 14, 15, 16]  # block_size 4: one full block, then 2 tokens
    engine = Engine(model, num_blocks=8, block_size=4)
    a = engine.add_request(prompt, max_new_tokens=3)
    engine.step()  # a's prompt pass; its blocks are filed for sharing only now (their keys and values exist)
    b = engine.add_request(prompt, max_new_tokens=3)
    engine.step()
    seq_a, seq_b = engine.running
    assert (seq_a.id, seq_b.id) == (a, b)
    assert seq_b.table.blocks[0] == seq_a.table.blocks[0]  # the full block: shared
    assert engine.allocator.refcount(seq_a.table.blocks[0]) == 2
    assert seq_b.table.blocks[1] != seq_a.table.blocks[1]  # b wrote its last prompt token there: copied
    assert (engine.num_shared, engine.num_copied) == (2, 1)
    while engine.has_work:
        engine.step()
    expected = generate(model, torch.tensor([prompt]), max_new_tokens=3).new_tokens[0]
    assert engine.results[a].tokens == engine.results[b].tokens == expected


@pytest.mark.parametrize("num_blocks", [6, 30])
def test_repeated_prompts_copy_on_write_exactly(model, num_blocks):
    prompts = [[464, 318, 257, 1332, 286, 11], [464, 318, 257, 1332, 13]]  # a shared block, then partial ones
    trace = [TraceRequest(0.05 * i, prompts[i % 2], 3 + i % 4, LogitsSettings(temperature=0.8) if i % 3 else None,
                          i % 3 > 0, i if i % 3 else None) for i in range(8)]
    clock = FakeClock()
    engine = Engine(model, num_blocks=num_blocks, block_size=4, max_batch_size=4, clock=clock)
    report = engine.run(trace, sleep=clock.sleep)
    assert [r.tokens for r in report.requests] == [alone(model, r) for r in trace]
    assert engine.num_copied > 0 and engine.num_shared > engine.num_copied


def test_preempted_request_goes_back_to_the_front_and_recomputes(model):
    engine = Engine(model, num_blocks=4, block_size=2, max_batch_size=4)
    ids = [engine.add_request([20 + i, 30 + i, 40 + i], max_new_tokens=4) for i in range(3)]
    records = []
    while engine.has_work:
        records.append(engine.step())
    # 0 and 1 fill the pool with their prompts (2 blocks each); when both need a third block, the newest
    # running one (1) is preempted and goes back to the FRONT of the queue: re-admitted before 2 starts
    preempted = [i for r in records for i in r.preempted]
    admitted = [i for r in records for i in r.admitted]
    assert preempted[0] == ids[1]
    assert admitted[:4] == [ids[0], ids[1], ids[1], ids[2]]
    for i in ids:
        expected = generate(model, torch.tensor([[20 + i, 30 + i, 40 + i]]), max_new_tokens=4).new_tokens[0]
        assert engine.results[i].tokens == expected
    assert engine.results[ids[0]].preemptions == 0  # the oldest is never preempted


def test_static_policy_admits_only_into_an_empty_batch(model):
    clock = FakeClock()
    trace = make_trace(8, seed=3, rate=50.0, prompt_len=(2, 6), new_tokens=(1, 8))
    engine = Engine(model, num_blocks=64, block_size=4, max_batch_size=3, policy="static", clock=clock)
    report = engine.run(trace, sleep=clock.sleep)
    running: set[int] = set()
    for step in report.steps:
        if step.admitted:
            assert not running
        running = (running | set(step.admitted)) - set(step.finished) - set(step.preempted)
    assert [r.tokens for r in report.requests] == [alone(model, r) for r in trace]


def test_shipped_model_float32_with_clear_margins():
    from minigpt.checkpoint import load_model

    model = load_model("shakespeare")
    prompts = ["ROMEO:\nWhat light", "First Citizen:\nBefore we proceed", "JULIET:\nO Romeo"]
    engine = Engine(model, num_blocks=16, block_size=8, max_batch_size=3)
    ids = [engine.add_request(p, max_new_tokens=6) for p in prompts]
    while engine.has_work:
        engine.step()
    for i, prompt in zip(ids, prompts):
        out = generate(model, prompt, max_new_tokens=6)
        assert engine.results[i].tokens == out.new_tokens[0]
        with torch.no_grad():
            logits = model(out.ids)[0, -7:-1]  # (6, V): the logits that chose each new token
        top2 = logits.topk(2, dim=-1).values
        assert (top2[:, 0] - top2[:, 1]).min() >= 1e-3, "too close to call on another CPU: pick another prompt"


# --- timing report and trace --------------------------------------------------------------------------------------


def test_report_numbers():
    requests = [RequestResult([1], [5, 6, 7], arrival=0.0, first_token_time=1.0, finish_time=3.0),
                RequestResult([1], [5], arrival=1.0, first_token_time=4.0, finish_time=4.0)]
    steps = [StepRecord(1.0, [0], [], {0: 5}, [], 3, 4), StepRecord(2.0, [1], [], {0: 6}, [], 5, 6)]
    report = ServingReport(requests, steps, block_size=4)
    assert report.duration == 4.0 and report.num_generated == 4 and report.throughput == 1.0
    assert report.ttft(0.5) == 2.0 and report.ttft(0.95) == 2.9 and report.tpot(0.5) == 1.0
    assert report.peak_blocks == 5
    assert "peak KV memory: 20 token slots paged vs 6 contiguous" in report.summary()
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    with pytest.raises(ValueError, match=r"^q must be in \[0, 1\], got 95$"):
        percentile([1.0], 95)


def test_run_is_deterministic_with_an_injected_clock(model):
    trace = make_trace(5, seed=4, prompt_len=(2, 6), new_tokens=(2, 6))

    def play() -> tuple[ServingReport, Engine]:
        clock = FakeClock()
        engine = Engine(model, num_blocks=12, block_size=4, max_batch_size=3, clock=clock)
        return engine.run(trace, sleep=clock.sleep), engine

    (first, engine), (second, _) = play(), play()
    assert first.requests == second.requests and first.steps == second.steps
    for r in first.requests:
        assert r.arrival < r.first_token_time <= r.finish_time
    # the memory of each step: the paged blocks of the requests it ran, and their full reservations
    running: set[int] = set()
    for step in first.steps:
        running |= set(step.admitted)
        assert step.contiguous_tokens == sum(len(trace[i].prompt) + trace[i].max_new_tokens for i in running)
        running -= set(step.finished)
    assert first.steps[0].blocks_in_use == blocks_needed(len(trace[0].prompt), 4)
    assert engine.allocator.num_free == 12


def test_make_trace_is_seeded():
    a, b = make_trace(4, seed=7, system_prompt=[1, 2]), make_trace(4, seed=7, system_prompt=[1, 2])
    assert a == b and a != make_trace(4, seed=8, system_prompt=[1, 2])
    assert [round(r.arrival, 6) for r in a] == [round(r.arrival, 6) for r in b]
    assert all(r.prompt[:2] == [1, 2] and 4 <= len(r.prompt) - 2 <= 32 and 4 <= r.max_new_tokens <= 32 for r in a)
    assert all(x.arrival < y.arrival for x, y in zip(a, a[1:]))


# --- bad input ---------------------------------------------------------------------------------------------------


def test_bad_input(model):
    with pytest.raises(TypeError, match=r"^model must be a minigpt GPT"):
        Engine("gpt2", num_blocks=4)
    with pytest.raises(ValueError, match=r"^num_blocks must be an integer >= 1, got 0$"):
        Engine(model, num_blocks=0)
    with pytest.raises(ValueError, match=r"^policy must be one of continuous, static, got 'fifo'$"):
        Engine(model, num_blocks=4, policy="fifo")
    engine = Engine(model, num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match=r"^prompt \+ max_new_tokens must fit the pool of 2 blocks of 4 tokens, "
                                         r"got 3 \+ 6 = 9 tokens$"):
        engine.add_request([1, 2, 3], max_new_tokens=6)
    with pytest.raises(ValueError, match=r"^prompt \+ max_new_tokens must be <= the model's context of 128 tokens, "
                                         r"got 3 \+ 126 = 129$"):
        Engine(model, num_blocks=64, block_size=4).add_request([1, 2, 3], max_new_tokens=126)
    with pytest.raises(ValueError, match=r"^prompt must be a str or a non-empty list of token ids in \[0, 50257\), "
                                         r"got \[\]$"):
        engine.add_request([], max_new_tokens=1)
    with pytest.raises(TypeError, match=r"^prompt must be a str or a non-empty list of token ids, got \(1, 2\) "):
        engine.add_request((1, 2), max_new_tokens=1)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be an integer >= 1, got 0$"):
        engine.add_request([1], max_new_tokens=0)
    with pytest.raises(ValueError, match=r"^trace must hold at least one TraceRequest, got \[\]$"):
        engine.run([])
    with pytest.raises(TypeError, match=r"^trace\[0\] must be a TraceRequest, got \(0.0, \[1\], 2\) "):
        engine.run([(0.0, [1], 2)])
    assert not engine.has_work  # nothing was queued by the refused calls


def test_a_request_draws_from_its_own_generator(model):
    settings = LogitsSettings(temperature=1.2)
    engine = Engine(model, num_blocks=16, block_size=4)
    mine = engine.add_request([7, 8, 9], max_new_tokens=5, logits=settings, do_sample=True,
                              generator=torch.Generator().manual_seed(5))
    engine.add_request([1, 2], max_new_tokens=5, logits=settings, do_sample=True, seed=6)  # shares every step
    while engine.has_work:
        engine.step()
    expected = generate(model, torch.tensor([[7, 8, 9]]), max_new_tokens=5, logits=settings, do_sample=True,
                        generator=torch.Generator().manual_seed(5)).new_tokens[0]
    assert engine.results[mine].tokens == expected
