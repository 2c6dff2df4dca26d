"""llama.cpp as a peer in `minigpt bench`: what the plan skips and why, and a tiny run beside minigpt's methods."""

import pytest
import torch

import minigpt.bench.suites
from minigpt.bench import BenchConfig, format_table, run_bench
from minigpt.bench.peers import LLAMACPP_DTYPES, LlamaCppDecoder
from minigpt.bench.suites import (
    DTYPES,
    QUALITY_WINDOWS,
    bound_format,
    decode_suite,
    plan,
    prompt_ids,
    quality,
    weights_and_activations,
)
from minigpt.checkpoint import load_model
from minigpt.data import load_splits
from minigpt.generate import generate
from minigpt.model import GPT, GPTConfig
from minigpt.quantize import round_weights
from minigpt.train import heldout_loss

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


# --- llama.cpp's arithmetic on minigpt's side: the "-a8" dtypes ---------------------------------------

def test_the_a8_dtypes_run_fast_and_cache_and_leave_llamacpp_to_its_base_row(monkeypatch):
    measurements, notes = notes_of(monkeypatch, batch_sizes=(1,), dtypes=("q4_0", "q4_0-a8", "q8_0-a8"),
                                   methods=("no-cache", "cache", "fast", "llamacpp"))
    assert measurements == [("q4_0", 1, m) for m in ("cache", "fast", "llamacpp")] + [
        (d, 1, m) for d in ("q4_0-a8", "q8_0-a8") for m in ("cache", "fast")]
    assert notes[:2] == [
        "no-cache and transformers skipped at q4_0, q4_0-a8, q8_0-a8: they have no such weights (cache runs the "
        "reference on the rounded weights)",
        "llamacpp skipped at q4_0-a8, q8_0-a8: llama.cpp's CPU kernels always round the activations at q8_0 and "
        "q4_0, so its rows at q4_0, q8_0 are what these compare with; add q8_0 to dtypes for those rows",
    ]
    assert ("q4_0-a8, q8_0-a8: the weights of q4_0, q8_0 with the activations rounded to Q8_0 blocks before each "
            "product, as llama.cpp does (fast: FastDecoder(activations='q8_0')); every other dtype keeps float32 "
            "activations") in notes
    assert ("cache at q4_0, q4_0-a8, q8_0-a8 is generate() on round_weights(model, format) (with "
            "activations='q8_0' at -a8): float32 arithmetic on the rounded weights, the reference the other "
            "methods' tokens are checked against; it reads fp32 weights, so its bound is fp32's") in notes
    _, notes = notes_of(monkeypatch, batch_sizes=(1,), dtypes=("q8_0", "q8_0-a8"), methods=("fast", "llamacpp"))
    assert notes[0] == ("llamacpp skipped at q8_0-a8: llama.cpp's CPU kernels always round the activations at q8_0 "
                        "and q4_0, so its rows at q8_0 are what these compare with")


def test_an_a8_dtype_reads_its_base_formats_bytes():
    assert [weights_and_activations(d) for d in ("q8_0-a8", "q4_0-a8", "q4_0", "fp16", "int8")] == [
        ("q8_0", "q8_0"), ("q4_0", "q8_0"), ("q4_0", "float32"), ("fp16", "float32"), ("int8", "float32")]
    assert [bound_format(m, "q4_0-a8") for m in ("fast", "llamacpp", "cache")] == ["q4_0", "q4_0", "fp32"]
    assert set(DTYPES) - set(LLAMACPP_DTYPES) == {"bf16", "int8", "q8_0-a8", "q4_0-a8"}


def test_an_a8_row_compares_with_llamacpps_row_at_its_base_format(monkeypatch):
    """vs llama.cpp and same tokens as llama.cpp pair q4_0-a8 with llama.cpp at q4_0 (which the plan runs);
    the timings and tokens are made up here, so the ratios are exact."""
    speeds = {"cache q4_0": 10.0, "fast q4_0": 20.0, "llamacpp q4_0": 40.0, "cache q4_0-a8": 8.0,
              "fast q4_0-a8": 50.0}
    llama_ids = torch.tensor([[1, 2, 3]])
    ids = {name: llama_ids if name.endswith("-a8") or name.startswith("llamacpp") else torch.tensor([[1, 2, 4]])
           for name in speeds}

    def measure(runs, batch_size, new_tokens, repeats, device):
        return {name: dict(decode_median_tokens_per_s=speeds[name], ids=ids[name]) for name in runs}

    monkeypatch.setattr(minigpt.bench.suites, "llama_cpp_version", lambda: "0.3.36")
    monkeypatch.setattr(minigpt.bench.suites, "LlamaCppDecoder", FakeLlamaCpp)
    monkeypatch.setattr(minigpt.bench.suites, "_runner", lambda *args: None)  # nothing is run: measure is made up
    monkeypatch.setattr(minigpt.bench.suites, "measure", measure)
    torch.manual_seed(0)
    config = BenchConfig(preset="tiny", batch_sizes=(1,), new_tokens=8, dtypes=("q4_0", "q4_0-a8"),
                         methods=("cache", "fast", "llamacpp"))
    results, _ = decode_suite(config, {"random": GPT(GPTConfig.from_preset("tiny")).eval()}, progress=False)
    rows = {f"{r['method']} {r['dtype']}": r for r in results}
    assert list(rows) == list(speeds)  # no llamacpp row at q4_0-a8
    assert {name: r["vs_llamacpp"] for name, r in rows.items()} == {
        "cache q4_0": 0.25, "fast q4_0": 0.5, "llamacpp q4_0": 1.0, "cache q4_0-a8": 0.2, "fast q4_0-a8": 1.25}
    assert {name: (r["same_tokens_as_cache"], r["same_tokens_as_llamacpp"]) for name, r in rows.items()} == {
        "cache q4_0": (True, False), "fast q4_0": (True, False), "llamacpp q4_0": (False, True),
        "cache q4_0-a8": (True, True), "fast q4_0-a8": (True, True)}


class FakeLlamaCpp:
    """Stands in for ``LlamaCppDecoder`` where nothing runs: it is built and closed."""

    def __init__(self, model, dtype, context):
        assert dtype == "q4_0"  # built for the base format only

    def close(self):
        pass


def test_the_decode_table_widens_its_columns_to_their_entries():
    a8 = dict(model="random", method="fast", dtype="q4_0-a8", batch_size=1, ttft_ms=7.8, decode_tokens_per_s=1155.0,
              decode_median_tokens_per_s=1150.0, decode_runs=[1140.0, 1150.0, 1155.0], bound_fraction=0.09,
              vs_llamacpp=1.19, peak_memory_mb=1.0, same_tokens_as_cache=None, same_tokens_as_llamacpp=True)
    llama = a8 | dict(method="llamacpp", dtype="q4_0", ttft_ms=1.5, decode_tokens_per_s=971.0,
                      decode_median_tokens_per_s=966.4, decode_runs=[960.0, 971.0], bound_fraction=0.07,
                      vs_llamacpp=1.0, peak_memory_mb=0.0)
    report = dict(results=[llama, a8], bandwidth_gb_s=25.7, notes=[], config=dict(preset="tiny"))
    assert format_table(report).splitlines()[1:4] == [
        "method        dtype    batch  first token ms  decode tok/s   median       min-max  of bound  vs llama.cpp  peak MB  same tokens  as llama.cpp",
        "llamacpp      q4_0         1             1.5         971.0    966.4   960.0-971.0        7%         1.00x      0.0  -            yes",
        "fast          q4_0-a8      1             7.8        1155.0   1150.0 1140.0-1155.0        9%         1.19x      1.0  -            yes",
    ]


def test_quality_measures_the_a8_formats_through_round_weights():
    config = BenchConfig(dtypes=("q4_0", "q4_0-a8"), target="shakespeare-draft")
    rows = {r["precision"]: r for r in quality(config, [])}
    assert list(rows) == ["fp32", "q4_0", "q4_0-a8"]
    assert rows["q4_0"]["bytes_per_weight"] == rows["q4_0-a8"]["bytes_per_weight"] == 18 / 32
    model = load_model("shakespeare-draft").eval()
    _, heldout = load_splits()
    a8 = round_weights(model, "q4_0", activations="q8_0")
    loss = heldout_loss(a8, heldout, model.config.block_size, max_windows=QUALITY_WINDOWS)
    assert rows["q4_0-a8"]["heldout_loss"] == loss != rows["q4_0"]["heldout_loss"]  # the activations were rounded
    assert rows["q4_0-a8"]["loss_change"] == loss - rows["fp32"]["heldout_loss"]
    assert abs(rows["q4_0-a8"]["loss_change"] - rows["q4_0"]["loss_change"]) < 0.02  # Q8_0 inputs cost little


def test_bench_with_the_a8_dtypes_on_the_tiny_model(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llama-cpp extra)")
    config = BenchConfig(preset="tiny", models=("random",), batch_sizes=(1,), new_tokens=8, repeats=1,
                         dtypes=("q4_0", "q4_0-a8"), methods=("fast", "llamacpp"), target="shakespeare-draft",
                         out_json=str(tmp_path / "b.json"), figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    rows = {(r["dtype"], r["method"]): r for r in report["results"]}
    if ("q4_0-a8", "fast") not in rows:
        pytest.skip(f"the fast path does not run q4_0-a8 here: {report['notes']}")
    assert list(rows) == [("q4_0", "fast"), ("q4_0", "llamacpp"), ("q4_0-a8", "fast")]
    a8, llama = rows["q4_0-a8", "fast"], rows["q4_0", "llamacpp"]
    assert a8["vs_llamacpp"] == a8["decode_median_tokens_per_s"] / llama["decode_median_tokens_per_s"]
    assert isinstance(a8["same_tokens_as_llamacpp"], bool)
    assert a8["bound_tokens_per_s"] == rows["q4_0", "fast"]["bound_tokens_per_s"] == llama["bound_tokens_per_s"]
    assert report["weight_bytes"]["random"]["q4_0-a8"] == report["weight_bytes"]["random"]["q4_0"]
    lines = format_table(report).splitlines()
    end = lines[1].index("batch") + len("batch")  # the dtype column widened to 7: the columns still line up
    assert [line[:end].split() for line in lines[1:5]] == [
        ["method", "dtype", "batch"], ["fast", "q4_0", "1"], ["llamacpp", "q4_0", "1"], ["fast", "q4_0-a8", "1"]]
    assert all(line[end] == " " for line in lines[1:5])
    assert [r["precision"] for r in report["quality"]] == ["fp32", "q4_0", "q4_0-a8"]
