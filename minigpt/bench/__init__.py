"""The bench wing: how fast minigpt decodes, against its peers and against what the memory allows.

Read the core first (``minigpt.generate``, ``minigpt.roofline``); this wing measures it. One module per job:

- ``measuring``: the one timer (``take_turns``, and ``measure`` built on it), memory bandwidth, peak
  memory, and the chapters' per-token times;
- ``peers``: transformers' GPT-2 and llama.cpp (``LlamaCppDecoder``) on the same weights, and torch's int8
  (``quantize_dynamic``);
- ``suites``: what ``minigpt bench`` measures (decode, int8 quality, every precision's quality, speculative,
  beam);
- ``report``: the tables, the JSON and the plot;
- ``command``: ``BenchConfig`` and the command line (``minigpt bench``, ``python -m minigpt.bench``).
"""

from minigpt.bench.command import BenchConfig, add_arguments, main, run, run_bench
from minigpt.bench.measuring import (
    BANDWIDTH_SECONDS,
    CacheSpeedup,
    PeakMemory,
    cache_speedup,
    measure,
    measure_bandwidth,
    read_kernels,
    read_rate,
    step_times,
    take_turns,
    timed,
)
from minigpt.bench.peers import (
    LlamaCppDecoder,
    llama_cpp_version,
    quantize_dynamic,
    to_transformers,
    transformers_generate,
)
from minigpt.bench.report import format_table, plot_results

__all__ = [
    "BANDWIDTH_SECONDS", "BenchConfig", "CacheSpeedup", "LlamaCppDecoder", "PeakMemory", "add_arguments",
    "cache_speedup", "format_table", "llama_cpp_version", "main", "measure", "measure_bandwidth", "plot_results",
    "quantize_dynamic", "read_kernels", "read_rate", "run", "run_bench", "step_times", "take_turns", "timed",
    "to_transformers", "transformers_generate",
]
