"""`minigpt bench` end to end on a tiny model, and the pieces it is made of. No speed is asserted."""

import argparse
import importlib.util
import json
import subprocess
import sys
import time

import pytest
import torch

import minigpt.bench.measuring
import minigpt.bench.suites
from minigpt.bench import (
    BenchConfig,
    PeakMemory,
    add_arguments,
    cache_speedup,
    format_table,
    measure,
    measure_bandwidth,
    read_kernels,
    read_rate,
    run,
    run_bench,
    step_times,
    take_turns,
)
from minigpt.fast import native
from minigpt.model import GPT, GPTConfig
from minigpt.roofline import decode_step_bytes

ROW_KEYS = {"model", "method", "dtype", "batch_size", "ttft_ms", "decode_tokens_per_s", "decode_median_tokens_per_s",
            "total_s", "peak_memory_mb", "bound_tokens_per_s", "bound_fraction", "same_tokens_as_cache",
            "same_tokens_as_llamacpp", "vs_llamacpp", "decode_runs"}


def tiny_flags(tmp_path, *more):
    return ["--preset", "tiny", "--models", "random", "--batch-sizes", "1", "2", "--new-tokens", "4", "--repeats", "1",
            "--out-json", str(tmp_path / "bench.json"), "--figure", str(tmp_path / "figures" / "bench.png"), *more]


def test_the_default_is_the_quick_decode_suite():
    """A newcomer's `minigpt bench`: both models, batch 1 and 8, fp32 and int8, no recomputing method, no search
    suites."""
    config = BenchConfig()
    assert (config.batch_sizes, config.dtypes, config.suites) == ((1, 8), ("fp32", "int8"), ("decode",))
    assert config.methods == ("cache", "fast", "transformers") and config.new_tokens == 128
    assert config.models == ("random", "shakespeare")  # GPT-2 124M's shape, random weights, and a trained model


def test_bench_runs_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    every = ["--methods", "no-cache", "cache", "fast", "transformers", "--suites", "decode", "speculative", "beam",
             "--dtypes", "fp32"]
    assert run(parser.parse_args(tiny_flags(tmp_path, *every))) == 0
    out, err = capsys.readouterr()
    assert "bench" in err  # the progress bar, on stderr
    assert out.splitlines()[0] == ("decode on random (tiny shape, random weights): tokens/s of the fastest run, "
                                   "the median and range of all")
    assert out.splitlines()[1].split()[:3] == ["method", "dtype", "batch"]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report) == {"config", "machine", "bandwidth_gb_s", "weight_bytes", "results", "int8_quality",
                           "quality", "speculative", "beam", "notes"}
    assert report["int8_quality"] == [] and report["quality"] == []  # fp32 only: nothing to compare it with
    assert report["config"]["preset"] == "tiny" and report["bandwidth_gb_s"] > 0
    rows = report["results"]
    assert all(set(r) == ROW_KEYS for r in rows)
    methods = {r["method"] for r in rows}
    assert {"cache", "fast", "no-cache"} <= methods
    assert {r["batch_size"] for r in rows if r["method"] == "no-cache"} == {1}  # no_cache_max_batch=1
    assert any("no-cache skipped at batch sizes [2]" in n for n in report["notes"])
    step = ("fast decodes with the C step (minigpt.fast.native), compiled for this CPU's "
            f"{torch.backends.cpu.get_cpu_capability()}" if native.available() else
            f"fast decodes with torch's step: the C step cannot run here ({native.unavailable_reason()})")
    assert step in report["notes"]
    assert all(r["decode_tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["bound_fraction"] > 0 for r in rows)
    assert all(r["same_tokens_as_cache"] for r in rows if r["method"] == "cache")
    assert (tmp_path / "figures" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in rows:
        assert f"{r['method']:<13} {r['dtype']:<5} {r['batch_size']:>6}" in out
    assert "speculative decoding: target shakespeare, draft shakespeare-draft, 4 new tokens for each of 3 prompts" in out
    assert "beam search: batch 1, fp32, 4 new tokens, EOS off" in out


def test_speculative_suite_rows(tmp_path):
    config = BenchConfig(preset="tiny", models=("random",),
                         new_tokens=6, repeats=1, suites=("speculative",), speculative_k=(1, 3),
                         out_json=str(tmp_path / "b.json"), figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    assert report["results"] == [] and report["beam"] == [] and not (tmp_path / "b.png").exists()
    rows = report["speculative"]
    has_transformers = importlib.util.find_spec("transformers") is not None
    transformers_rows = [("greedy", "transformers alone", None), ("greedy", "transformers assisted", 1),
                         ("greedy", "transformers assisted", 3)] if has_transformers else []
    assert [(r["mode"], r["method"], r["k"]) for r in rows] == [
        (mode, method, k) for mode in ("greedy", "sample")
        for method, k in (("target alone", None), ("speculative", 1), ("speculative", 3), ("prompt lookup", None))
    ] + transformers_rows
    for r in rows:
        assert r["new_tokens"] == 6 and r["tokens_per_s"] > 0 and r["speedup"] > 0
        if r["method"].startswith("transformers"):  # transformers does not report its counts
            assert r["acceptance_rate"] is None and r["target_passes_per_token"] is None
        elif r["method"] == "target alone":
            assert r["acceptance_rate"] is None and r["speedup"] == 1.0 and r["target_passes_per_token"] == 1.0
        else:
            assert 0 <= r["acceptance_rate"] <= 1 and 0 < r["target_passes_per_token"] <= 1
        if r["method"].endswith("alone"):
            assert r["speedup"] == 1.0
        # greedy speculative decoding is the target's greedy decoding; sampled runs draw differently
        assert r["same_tokens_as_target"] is (True if r["mode"] == "greedy" else None)


def test_beam_suite_rows(tmp_path):
    config = BenchConfig(preset="tiny", models=("random",), new_tokens=5, repeats=1, suites=("beam",), num_beams=(2, 3),
                         out_json=str(tmp_path / "b.json"), figure=str(tmp_path / "b.png"))
    rows = run_bench(config, progress=False)["beam"]
    assert [(r["method"], r["num_beams"]) for r in rows] == [("greedy", 1), ("beam", 2), ("beam", 3)]
    greedy = rows[0]
    assert (greedy["relative_to_greedy"], greedy["cost_per_beam"]) == (1.0, 1.0)
    for r in rows[1:]:
        assert r["relative_to_greedy"] == pytest.approx(r["tokens_per_s"] / greedy["tokens_per_s"])
        assert r["cost_per_beam"] == pytest.approx(1 / (r["relative_to_greedy"] * r["num_beams"]))
    # transformers' beam search on the same weights picks the same best sequence at every width
    has_transformers = importlib.util.find_spec("transformers") is not None
    assert all(r["same_tokens_as_transformers"] is (True if has_transformers else None) for r in rows)
    assert all((r["transformers_tokens_per_s"] is not None) == has_transformers for r in rows)


def test_speculative_and_beam_tables():
    speculative = [dict(method="target alone", mode="greedy", k=None, new_tokens=100, tokens_per_s=100.0, speedup=1.0,
                        acceptance_rate=None, target_passes_per_token=1.0, same_tokens_as_target=True),
                   dict(method="speculative", mode="sample", k=4, new_tokens=100, tokens_per_s=150.0, speedup=1.5,
                        acceptance_rate=0.625, target_passes_per_token=0.4, same_tokens_as_target=None),
                   dict(method="transformers alone", mode="greedy", k=None, new_tokens=100, tokens_per_s=90.0,
                        speedup=1.0, acceptance_rate=None, target_passes_per_token=None, same_tokens_as_target=True)]
    beam = [dict(method="beam", num_beams=4, new_tokens=64, tokens_per_s=10.0, relative_to_greedy=0.5,
                 cost_per_beam=0.5, transformers_tokens_per_s=8.0, same_tokens_as_transformers=True),
            dict(method="beam", num_beams=8, new_tokens=64, tokens_per_s=9.0, relative_to_greedy=0.45,
                 cost_per_beam=0.28, transformers_tokens_per_s=None, same_tokens_as_transformers=None)]
    report = dict(results=[], speculative=speculative, beam=beam, bandwidth_gb_s=24.0, notes=[],
                  config=dict(target="big", draft="small"))
    assert format_table(report).splitlines() == [
        "",
        "speculative decoding: target big, draft small, 100 new tokens for each of 3 prompts",
        "method                mode     k  tokens/s  speed-up  accepted  target passes/token  same tokens",
        "target alone          greedy   -     100.0     1.00x         -                 1.00  yes",
        "speculative           sample   4     150.0     1.50x     62.5%                 0.40  -",
        "transformers alone    greedy   -      90.0     1.00x         -                    -  yes",
        "",
        "beam search: batch 1, fp32, 64 new tokens, EOS off",
        "method  beams  tokens/s  vs greedy  cost per beam  transformers tok/s  vs transformers  same tokens",
        "beam        4      10.0      0.50x          0.50x                 8.0            1.25x  yes",
        "beam        8       9.0      0.45x          0.28x                   -                -  -",
        "memory read bandwidth: 24.0 GB/s",
    ]


def test_missing_transformers_is_a_note_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    config = BenchConfig(preset="tiny", models=("random",), batch_sizes=(1,), new_tokens=3, dtypes=("fp32",), repeats=1,
                         methods=("cache", "transformers"), suites=("decode",), out_json=str(tmp_path / "b.json"),
                         figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    assert [r["method"] for r in report["results"]] == ["cache"]
    assert report["notes"] == ["transformers skipped: not installed (pip install 'minigpt[dev]')"]
    assert report["machine"]["transformers"] is None


def test_transformers_method_uses_the_same_weights(tmp_path):
    pytest.importorskip("transformers")
    config = BenchConfig(preset="tiny", models=("random",), batch_sizes=(2,), new_tokens=5, dtypes=("fp32",), repeats=1,
                         methods=("cache", "transformers"), suites=("decode",), out_json=str(tmp_path / "b.json"),
                         figure=str(tmp_path / "b.png"))
    rows = run_bench(config, progress=False)["results"]
    assert [r["same_tokens_as_cache"] for r in rows] == [True, True]


def test_measure_bandwidth_is_positive():
    assert measure_bandwidth("cpu", nbytes=2**24, repeats=2) > 0
    assert measure_bandwidth("cpu", nbytes=2**24, repeats=1, seconds=0.05) > 0


def test_measure_bandwidth_reads_with_the_c_steps_kernel_too(monkeypatch):
    """Where torch's kernels read slowly (its portable ones), the C step's own read keeps the bound a bound."""
    calls = []
    monkeypatch.setattr(minigpt.bench.measuring, "native_matvec", lambda w, x: calls.append(w.shape) or w @ x)
    measure_bandwidth("cpu", nbytes=2**22, repeats=1)
    assert calls == ([(1024, 1024), (1024, 1024)] if native.available() else [])  # warm-up, then timed


def test_measure_bandwidth_reads_whole_rows_of_the_bytes_asked_for(monkeypatch):
    sizes = []
    monkeypatch.setattr(minigpt.bench.measuring, "read_rate",
                        lambda read, nbytes, seconds, device: sizes.append(nbytes) or 1.0)
    measure_bandwidth("cpu", nbytes=2**22 + 100, repeats=1, seconds=0.01)
    assert sizes == [2**22]  # rounded down to rows of 1024 fp32 numbers, and read as that many bytes
    with pytest.raises(ValueError, match="nbytes must be at least 4096"):
        measure_bandwidth("cpu", nbytes=100)


def test_read_kernels_each_read_the_whole_tensor():
    x = torch.arange(8192, dtype=torch.float32)
    reads = read_kernels(x)
    assert list(reads) == ["torch sum", "torch mv", "torch vm", *(["C step matvec"] if native.available() else [])]
    assert float(reads["torch sum"]()) == pytest.approx(float(x.sum()))
    assert torch.equal(reads["torch vm"](), x.view(1024, -1).sum(dim=0))  # a vector of ones times each column
    for name in reads.keys() - {"torch sum", "torch vm"}:
        assert torch.allclose(reads[name](), x.view(-1, 1024).sum(dim=1)), name  # each row times a vector of ones


def test_measure_takes_turns_with_between_and_keeps_each_rounds_rate(monkeypatch):
    calls = []
    steps = {"a": iter([0.01, 0.02, 0.03]), "b": iter([0.03, 0.02, 0.01])}  # seconds a decode step, each round
    prefills = {"a": iter([0.1, 0.3, 0.2]), "b": iter([0.2, 0.1, 0.1])}  # the 1-token runs: 0.1 s at their fastest

    def timed(run, n, device):  # a fake clock: a 4-token run is the fastest prefill, then 3 steps of the round's
        calls.append(f"{run.__name__}{n}")
        seconds = next(prefills[run.__name__]) if n == 1 else 0.1 + (n - 1) * next(steps[run.__name__])
        return seconds, torch.zeros(2, 3 + n)

    def a(n):
        calls.append(f"a{n}")

    def b(n):
        calls.append(f"b{n}")

    monkeypatch.setattr(minigpt.bench.measuring, "timed", timed)
    rows = measure({"a": a, "b": b}, 2, 4, 3, torch.device("cpu"), between=lambda: calls.append("between"))
    assert calls == ["a2", "b2", *["between", "a1", "a4", "between", "b1", "b4"] * 3]  # warm-ups, then 3 rounds
    assert rows["a"]["decode_runs"] == pytest.approx([200.0, 100.0, 2 / 0.03])  # 2 rows per step of 10, 20, 30 ms
    assert rows["b"]["decode_runs"] == pytest.approx([2 / 0.03, 100.0, 200.0])
    assert rows["a"]["decode_tokens_per_s"] == rows["b"]["decode_tokens_per_s"] == pytest.approx(200.0)  # the fastest


def test_take_turns_warms_up_then_times_every_length_in_turns():
    calls = []
    runs = {name: (lambda n, name=name: calls.append(f"{name}{n}") or n) for name in ("a", "b")}
    turns = take_turns(runs, (1, 3), 2, torch.device("cpu"), between=lambda: calls.append("|"))
    assert calls == ["a2", "b2", *["|", "a1", "a3", "|", "b1", "b3"] * 2]
    assert [len(s) for s in turns["a"].seconds.values()] == [2, 2] and turns["b"].output == 3


def test_python_dash_m_bench_is_the_command():
    out = subprocess.run([sys.executable, "-m", "minigpt.bench", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: python -m minigpt.bench") and "--speculative-k" in out


def test_a_sustained_reading_reads_again_until_the_time_is_up():
    calls = []

    def read():  # "reads" 1 GB in at least 10 ms
        calls.append(time.perf_counter())
        time.sleep(0.01)

    rate = read_rate(read, 10**9, 0.05, torch.device("cpu"))
    assert len(calls) >= 2 and 0 < rate <= 100  # GB/s: at most 1 GB per 10 ms
    assert time.perf_counter() - calls[0] >= 0.05
    calls.clear()
    read_rate(read, 10**9, 0.0, torch.device("cpu"))
    assert len(calls) == 1  # no time asked: one read


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as peak:
        x = torch.ones(2**24)  # 64 MiB, touched
        x += 1
    assert peak.mb is None or peak.mb > 32


def test_step_times_and_cache_speedup():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    assert len(step_times(model, "Hello", new_tokens=5, use_cache=False)) == 5
    for fast in (False, True):
        result = cache_speedup(model, torch.tensor([[15496, 11]]), new_tokens=8, fast=fast)
        assert result.identical and result.speedup == pytest.approx(result.no_cache_s / result.cache_s)


def test_table_marks_differing_tokens_and_missing_memory():
    row = dict(model="shakespeare", method="fast", dtype="bf16", batch_size=32, ttft_ms=1.25,
               decode_tokens_per_s=1234.5, decode_median_tokens_per_s=1200.0, decode_runs=[1234.5, 1100.25, 1200.0],
               bound_fraction=0.5, vs_llamacpp=None, peak_memory_mb=None, same_tokens_as_cache=False,
               same_tokens_as_llamacpp=None)
    table = format_table(dict(results=[row], bandwidth_gb_s=30.0, notes=["bf16 skipped: x"], config={}))
    assert table.splitlines()[0] == ("decode on shakespeare (trained): tokens/s of the fastest run, the median and "
                                     "range of all")
    assert table.splitlines()[2] == ("fast          bf16      32             1.2        1234.5   1200.0 "
                                     "1100.2-1234.5       50%             -        -  NO           -")
    assert table.splitlines()[-1] == "note: bf16 skipped: x"


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="gpt3"), "preset must be one of gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, small, got 'gpt3'"),
    (dict(batch_sizes=()), "batch_sizes must be a non-empty list of integers >= 1, got ()"),
    (dict(batch_sizes=(1, 0)), "batch_sizes must be an integer >= 1, got 0"),
    (dict(speculative_k=(0,)), "speculative_k must be an integer >= 1, got 0"),
    (dict(num_beams=()), "num_beams must be a non-empty list of integers >= 1, got ()"),
    (dict(suites=("decode", "sampling")), "suites must be one of decode, speculative, beam, got 'sampling'"),
    (dict(new_tokens=1), "new_tokens must be an integer >= 2, got 1"),
    (dict(prompt_len=0), "prompt_len must be an integer >= 1, got 0"),
    (dict(dtypes=("fp8",)), "dtypes must be one of fp32, bf16, int8, fp16, q8_0, q4_0, q8_0-a8, q4_0-a8, got 'fp8'"),
    (dict(dtypes=()), "dtypes must name at least one of fp32, bf16, int8, fp16, q8_0, q4_0, q8_0-a8, q4_0-a8, got ()"),
    (dict(methods=("cache", "vllm")),
     "methods must be one of no-cache, cache, fast, transformers, llamacpp, got 'vllm'"),
    (dict(models=()), "models must name at least one model (random, a shipped name or a path), got ()"),
    (dict(models=("random", "random")), "models must not repeat a model, got ('random', 'random')"),
    (dict(preset="tiny", prompt_len=100, new_tokens=29), "prompt_len + new_tokens must be <= 128 (the tiny context), got 100 + 29"),
    (dict(device="gpu"), "device must be a torch device such as 'cpu', 'cuda', 'cuda:1'; got 'gpu'"),
    (dict(compile="yes"), "compile must be True, False or None (auto), got 'yes'"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError) as e:
        BenchConfig(**kwargs)
    assert str(e.value) == message


def test_a_bool_is_not_a_count():
    with pytest.raises(TypeError, match=r"^repeats must be an integer >= 1, got True$"):
        BenchConfig(repeats=True)


def test_cli_flags_cover_every_field():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--methods", "cache", "fast", "--compile", "off", "--no-cache-max-batch", "8",
                              "--suites", "decode", "beam", "--num-beams", "2", "4", "--draft", "d"])
    assert (args.methods, args.compile, args.no_cache_max_batch) == (["cache", "fast"], False, 8)
    assert (args.suites, args.num_beams, args.draft) == (["decode", "beam"], [2, 4], "d")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtypes", "fp8"])


def test_int8_rows_and_their_quality(tmp_path):
    config = BenchConfig(preset="tiny", models=("random",),
                         batch_sizes=(1,), new_tokens=4, repeats=1, dtypes=("fp32", "int8"),
                         target="shakespeare-draft", out_json=str(tmp_path / "b.json"), figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    has_transformers = importlib.util.find_spec("transformers") is not None
    methods = ["cache", "fast"] + ["transformers"] * has_transformers
    assert [(r["dtype"], r["method"]) for r in report["results"]] == [(d, m) for d in ("fp32", "int8") for m in methods]
    int8 = [r for r in report["results"] if r["dtype"] == "int8"]
    assert all(r["same_tokens_as_cache"] is None for r in int8)  # two different quantizations: see int8_quality
    fp32_bound = next(r for r in report["results"] if r["dtype"] == "fp32")["bound_tokens_per_s"]
    assert all(r["bound_tokens_per_s"] > 3 * fp32_bound for r in int8)  # a quarter of the bytes, plus scales
    assert report["weight_bytes"] == {"random": {"fp32": decode_step_bytes(GPTConfig.from_preset("tiny")),
                                                 "int8": decode_step_bytes(GPTConfig.from_preset("tiny"), weights="int8")}}
    # every precision's quality: fp32, then int8 as the fast path's row of int8_quality
    fast_int8 = report["int8_quality"][0]
    assert [r["precision"] for r in report["quality"]] == ["fp32", "int8"]
    assert report["quality"][1]["heldout_loss"] == fast_int8["heldout_loss_int8"]
    assert report["quality"][0]["heldout_loss"] == pytest.approx(fast_int8["heldout_loss_fp32"], abs=1e-6)
    assert [r["method"] for r in report["int8_quality"]] == ["fast", "cache"] + ["transformers"] * has_transformers
    for r in report["int8_quality"]:
        assert r["loss_change"] == pytest.approx(r["heldout_loss_int8"] - r["heldout_loss_fp32"])
        assert abs(r["loss_change"]) < 0.05 and 0 <= r["greedy_match"] <= r["same_context_match"] <= 1
    fast = report["int8_quality"][0]
    assert fast["scheme"] in ("int8 dynamic", "int8 weight-only") and abs(fast["loss_change"]) < 0.02
    table = format_table(report)
    assert "int8 quality on shakespeare-draft: held-out loss (nats/token, 16 windows)" in table
    assert any(n.startswith("int8: fast is FastDecoder(weights='int8')") for n in report["notes"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one batch size: bars


def test_every_method_and_dtype_of_a_batch_size_take_turns(tmp_path, monkeypatch):
    calls, real = [], minigpt.bench.suites.measure

    def recording(runs, batch_size, *args):
        calls.append((batch_size, sorted(runs)))
        return real(runs, batch_size, *args)

    monkeypatch.setattr(minigpt.bench.suites, "measure", recording)
    config = BenchConfig(preset="tiny", models=("random",),
                         batch_sizes=(1, 2), new_tokens=3, repeats=1, dtypes=("fp32", "int8"),
                         methods=("cache", "fast"), target="shakespeare-draft", out_json=str(tmp_path / "b.json"),
                         figure=str(tmp_path / "b.png"))
    report = run_bench(config, progress=False)
    together = ["cache fp32", "cache int8", "fast fp32", "fast int8"]
    assert calls == [(1, together), (2, together)]  # one measure per batch size: fp32 and int8 side by side
    assert [(r["dtype"], r["batch_size"], r["method"]) for r in report["results"]] == [
        (d, b, m) for d in ("fp32", "int8") for b in (1, 2) for m in ("cache", "fast")]  # the table's order
