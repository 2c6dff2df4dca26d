"""The memory pre-check: runs whose peak (cache, logits, activations) no machine has are refused before any work."""

import pytest
import torch

from minigpt.fast.decoder import FastDecoder
from minigpt.generate import generate, stream
from minigpt.kv_cache import KVCache, check_memory_fits, peak_bytes
from minigpt.model import GPT
from minigpt.search import beam_search, contrastive_search, sample_and_rank

GB = r"[0-9.]+ GB"


def refusal(what: str, cache: str, logits: str, lower: str = "one of them, or max_new_tokens") -> str:
    """The pinned message, with the numbers that depend on the machine left open."""
    return (
        rf"{what} need {GB} at the peak of decoding \({cache}, logits over the 50257-token vocabulary "
        rf"{logits}, activations {GB}\), more than the {GB} of memory available on cpu; lower {lower}$"
    )


@pytest.fixture
def no_work(monkeypatch):
    """Any forward pass or cache allocation fails the test: the refusal must come first."""
    monkeypatch.setattr(GPT, "forward", lambda *args, **kw: pytest.fail("the model ran before the check"))
    monkeypatch.setattr(KVCache, "__init__", lambda *args, **kw: pytest.fail("a cache was allocated before the check"))


@pytest.mark.parametrize("variant", [{}, dict(do_sample=True), dict(num_beam_groups=2, diversity_penalty=0.5)])
def test_a_million_beams_are_refused_for_their_logits(tiny_model, no_work, variant):
    # the cache is 4.1 GB; the (10**6, 50257) log-probs and their copies are 804 GB: what failed 52 s in
    message = refusal(r"num_beams=1000000 × batch size 1 = 1000000 rows",
                      r"KV cache 4.1 GB for 4 positions each", r"804.1 GB")
    with pytest.raises(ValueError, match=message):
        beam_search(tiny_model, "Hi", num_beams=10**6, max_new_tokens=3, **variant)


@pytest.mark.parametrize("use_cache", [True, False])
def test_200_000_prompts_are_refused(tiny_model, no_work, use_cache):
    ids = torch.randint(0, 50257, (200_000, 8))
    cache = r"KV cache 2.3 GB for 11 positions each" if use_cache else "no KV cache"
    message = refusal("batch size 200000 = 200000 rows", cache, r"160.8 GB")
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, ids, max_new_tokens=3, use_cache=use_cache)


def test_many_samples_and_candidates_are_refused(tiny_model, no_work):
    # sample_and_rank draws its samples as generate's num_return_sequences
    with pytest.raises(ValueError, match=refusal(r"num_return_sequences=1000000 × batch size 1 = 1000000 rows",
                                                 r"KV cache 52.2 GB for 51 positions each", r"804.1 GB")):
        sample_and_rank(tiny_model, "Hi", num_samples=10**6)
    # contrastive search's prompt pass returns every position's logits; its steps score top_k candidates a row
    with pytest.raises(ValueError, match=refusal(r"top_k=50000 × batch size 100 = 5000000 rows",
                                                 r"KV cache 25.6 GB for 5 positions each", r"4020.6 GB")):
        contrastive_search(tiny_model, ["Hi"] * 100, penalty_alpha=0.5, top_k=50_000, max_new_tokens=4)


def test_fast_decoder_too_big_is_refused_before_copying_anything(tiny_model, monkeypatch):
    monkeypatch.setattr(torch, "zeros", lambda *args, **kw: pytest.fail("a buffer was allocated before the check"))
    message = refusal("max_batch_size=10000000 rows", r"KV cache 1310.7 GB for 128 positions each", r"2010.3 GB",
                      lower="max_batch_size or max_len")
    with pytest.raises(ValueError, match=message):
        FastDecoder(tiny_model, 10**7, 128)


def test_the_peak_counts_cache_logits_and_activations(tiny_model):
    # tiny: 2 layers, 4 heads, 64 wide, 50257 tokens, fp32; 8 rows of 16 positions from 2 prompts of 6 tokens
    cache = 2 * 2 * 8 * 16 * 64 * 4
    step_logits = 8 * 50257 * (4 + 3 * 4)  # the model's logits and 3 fp32 copies, every row
    step_activations = 8 * 1 * (10 * 64 + 2 * 4 * 16) * 4  # one position a row, attending over 16 keys
    assert peak_bytes(tiny_model, 8, 16, prompt_rows=2, prompt_len=6) == dict(
        cache=cache, logits=step_logits, activations=step_activations)
    # every position's logits from the prompt's pass (contrastive search): 2 × 6 rows of the vocabulary
    prompt = dict(logits=2 * 6 * 50257 * 4, activations=2 * 6 * (10 * 64 + 2 * 4 * 6) * 4)
    assert peak_bytes(tiny_model, 2, 16, prompt_rows=2, prompt_len=6, all_positions=True) == dict(
        cache=2 * 2 * 2 * 16 * 64 * 4, **prompt)
    # without a cache every step runs all rows over all positions
    assert peak_bytes(tiny_model, 8, 16, prompt_rows=2, prompt_len=6, use_cache=False) == dict(
        cache=0, logits=step_logits, activations=8 * 16 * (10 * 64 + 2 * 4 * 16) * 4)
    # a bf16 cache (FastDecoder's dtype) takes half the bytes
    assert peak_bytes(tiny_model, 8, 16, prompt_rows=2, prompt_len=6, dtype=torch.bfloat16)["cache"] == cache // 2


def test_streams_and_runs_without_a_cache_are_checked_too(tiny_model, no_work, monkeypatch):
    monkeypatch.setattr("minigpt.kv_cache.available_memory", lambda device: 10**5)  # a 0.1 MB machine
    with pytest.raises(ValueError, match=refusal("batch size 1 = 1 rows", "no KV cache", r"0.0 GB")):
        generate(tiny_model, "Hi", max_new_tokens=2, use_cache=False)
    with pytest.raises(ValueError, match=refusal("batch size 1 = 1 rows", r"KV cache 0.0 GB for 3 positions each",
                                                 r"0.0 GB")):
        stream(tiny_model, "Hi", max_new_tokens=2)  # refused when called, not at the first token


def test_unknown_free_memory_refuses_nothing(tiny_model, monkeypatch):
    monkeypatch.setattr("minigpt.kv_cache.available_memory", lambda device: None)
    check_memory_fits(tiny_model, 10**9, 128, "anything", prompt_rows=1, prompt_len=1)


def test_normal_sizes_still_run(tiny_model):
    assert beam_search(tiny_model, "Hi", num_beams=8, max_new_tokens=3).ids.shape == (1, 4)
    assert len(generate(tiny_model, torch.randint(0, 50257, (64, 8)), max_new_tokens=2).new_tokens) == 64
    assert FastDecoder(tiny_model, 16, 128).max_batch_size == 16
