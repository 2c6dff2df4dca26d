"""llama.cpp as a peer in `minigpt bench`: what the plan skips and why, and a tiny run beside minigpt's methods."""

import pytest
import torch

import minigpt.bench.suites
from minigpt.bench import BenchConfig, format_table, run_bench
from minigpt.bench.peers import LLAMACPP_DTYPES, LlamaCppDecoder
from minigpt.bench.suites import plan, prompt_ids
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig

LLAMA_F32_TOLERANCE = 2**-11  # of the largest |logit|: llama.cpp f32 against minigpt (tests/test_export_gguf.py)


def notes_of(monkeypatch, has_llamacpp=True, bf16=True, **kwargs):
    monkeypatch.setattr(minigpt.bench.suites, "bf16_supported", lambda device: bf16)  # as on an AVX512-BF16 CPU
    return plan(BenchConfig(**kwargs), has_transformers=False, has_llamacpp=has_llamacpp)


def test_llamacpp_is_skipped_with_the_reason_when_not_installed(monkeypatch):
    measurements, notes = notes_of(monkeypatch, has_llamacpp=False, batch_sizes=(1,), dtypes=("fp32",),
                                   methods=("fast", "llamacpp"))
    assert measurements == [("fp32", 1, "fast")]
    assert notes[0] == "llamacpp skipped: llama-cpp-python is not installed (pip install 'minigpt[llama-cpp]')"


def test_llamacpp_runs_batch_1_at_the_formats_with_a_gguf_twin(monkeypatch):
    measurements, notes = notes_of(monkeypatch, batch_sizes=(1, 8), dtypes=("fp32", "bf16", "int8", "q4_0"),
                                   methods=("llamacpp",))
    assert measurements == [("fp32", 1, "llamacpp"), ("q4_0", 1, "llamacpp")]
    assert notes[:2] == [
        "llamacpp skipped at batch sizes [8]: llama.cpp's binding decodes one sequence",
        "llamacpp skipped at bf16, int8: no GGUF twin (the GGUF export writes f32, f16, q8_0, q4_0)",
    ]
    assert any(n.startswith("llamacpp: llama.cpp (llama-cpp-python 0.3.36) on export_gguf's file") for n in notes)


def test_the_rounded_formats_run_fast_cache_and_llamacpp_only(monkeypatch):
    measurements, notes = notes_of(monkeypatch, batch_sizes=(1,), dtypes=("fp16", "q8_0"),
                                   methods=("no-cache", "cache", "fast", "transformers"))
    assert measurements == [("fp16", 1, "cache"), ("fp16", 1, "fast"), ("q8_0", 1, "cache"), ("q8_0", 1, "fast")]
    assert notes[:2] == ["transformers skipped: not installed (pip install 'minigpt[dev]')",
                         "no-cache and transformers skipped at fp16, q8_0: they have no such weights (cache runs "
                         "the reference on the rounded weights)"]
    assert ("cache at fp16, q8_0 is generate() on round_weights(model, format): float32 arithmetic on the rounded "
            "weights, the reference the other methods' tokens are checked against; it reads fp32 weights, so its "
            "bound is fp32's") in notes


def test_bench_with_llamacpp_on_the_tiny_model(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llama-cpp extra)")
    config = BenchConfig(preset="tiny", models=("random",),
                         batch_sizes=(1,), new_tokens=8, repeats=2, dtypes=("fp32", "q8_0"),
                         methods=("cache", "fast", "llamacpp"), target="shakespeare-draft",
                         out_json=str(tmp_path / "b.json"), figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    rows = {(r["dtype"], r["method"]): r for r in report["results"]}
    assert list(rows) == [(d, m) for d in ("fp32", "q8_0") for m in ("cache", "fast", "llamacpp")]
    assert report["machine"]["llama_cpp"] == "0.3.36"
    for (dtype, _), r in rows.items():
        assert len(r["decode_runs"]) == 2 and r["decode_tokens_per_s"] == max(r["decode_runs"])
        assert min(r["decode_runs"]) <= r["decode_median_tokens_per_s"] <= max(r["decode_runs"])
        llama = rows[dtype, "llamacpp"]
        assert r["vs_llamacpp"] == r["decode_median_tokens_per_s"] / llama["decode_median_tokens_per_s"]
        assert isinstance(r["same_tokens_as_llamacpp"], bool)
    assert rows["fp32", "llamacpp"]["vs_llamacpp"] == 1.0 and rows["q8_0", "llamacpp"]["same_tokens_as_llamacpp"]
    # at q8_0 the fast path reads GGUF's bytes and the readable loop the rounded fp32 model: a bound each
    assert rows["q8_0", "fast"]["bound_tokens_per_s"] == rows["q8_0", "llamacpp"]["bound_tokens_per_s"]
    assert rows["q8_0", "cache"]["bound_tokens_per_s"] == rows["fp32", "cache"]["bound_tokens_per_s"]
    assert rows["q8_0", "fast"]["bound_tokens_per_s"] > 3 * rows["fp32", "fast"]["bound_tokens_per_s"]
    # f32: llama.cpp's greedy tokens are minigpt's (every step's top-2 margin is far above the two's difference)
    assert rows["fp32", "fast"]["same_tokens_as_llamacpp"] and rows["fp32", "cache"]["same_tokens_as_llamacpp"]
    table = format_table(report)
    assert "vs llama.cpp" in table.splitlines()[1] and table.splitlines()[1].endswith("same tokens  as llama.cpp")
    assert [r["precision"] for r in report["quality"]] == ["fp32", "q8_0"]
    q8 = report["quality"][1]
    assert q8["bytes_per_weight"] == 34 / 32 and q8["loss_change"] == q8["heldout_loss"] - report["quality"][0][
        "heldout_loss"]
    assert abs(q8["loss_change"]) < 0.05 and 0 <= q8["greedy_match"] <= 1
    assert "precision against loss on shakespeare-draft" in table


def test_the_tiny_models_greedy_margins_hold_llama_cpps_f32_noise():
    """What makes `same_tokens_as_llamacpp` at f32 a check above: the margins of the prompt the bench gives."""
    torch.manual_seed(0)  # run_bench's random weights
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    ids = prompt_ids(1, BenchConfig(preset="tiny", new_tokens=8), torch.device("cpu"))
    out = generate(model, ids, max_new_tokens=8).ids
    with torch.no_grad():
        logits = model(out[:, :-1])[0, -8:]
    top2 = logits.topk(2).values
    assert (top2[:, 0] - top2[:, 1]).min() > 10 * LLAMA_F32_TOLERANCE * logits.abs().max()


def test_llamacpp_decoder_checks_its_input():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llama-cpp extra)")
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match=r"^dtype must be one of fp32, fp16, q8_0, q4_0, got 'int8'$"):
        LlamaCppDecoder(model, "int8", context=8)
    decoder = LlamaCppDecoder(model, "fp32", context=8, threads=1)
    with pytest.raises(ValueError, match=r"llama.cpp's binding decodes one sequence, got shape \(2, 3\)"):
        decoder.generate(torch.zeros(2, 3, dtype=torch.long), 2)
    assert decoder.generate(torch.tensor([[1, 2, 3]]), 4).shape == (1, 7)
    decoder.close()
    assert list(LLAMACPP_DTYPES) == ["fp32", "fp16", "q8_0", "q4_0"]
