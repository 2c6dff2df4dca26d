"""Students can change a chapter's inputs: every chapter opens with a parameters cell, and runs with others.

The first thing a course should invite is "try your own prompt". So each chapter's first code cell holds
its inputs (a prompt, a seed, ...) and nothing else, tagged ``parameters`` as papermill expects
(``papermill 07_kv_cache.ipynb out.ipynb -p prompt "JULIET:"``). The checks that pin the numbers of the
default run step aside when the inputs change (``if default_run:``, where ``default_run`` compares the
inputs with their defaults); every other check (hand-built equals library, probabilities sum to 1, a
property a figure shows) still runs.

Here each chapter runs top to bottom with a second set of inputs (``SECOND_RUN``: another prompt and seed)
and must finish without an error, drawing every figure its default run draws.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Another prompt and seed for each chapter, as a student might try them.
SECOND_RUN: dict[str, dict] = {
    "00_tokens_and_logits": {"text": "Wherefore art thou", "prompt": "JULIET:\nO Romeo, Romeo"},
    "08_speculative_decoding": {"prompt": "JULIET:\nO Romeo", "residual_prompt": "HAMLET:\nTo be, or not to be",
                                "sampling_prompt": "QUEEN:\nI", "seed": 1000},
    "11_which_method_when": {"seed": 1, "place": 0.25},
    "01_greedy": {"prompt": "JULIET:\nO Romeo, Romeo"},
    "02_temperature": {"prompt": "HAMLET:\nTo be, or not to be", "seed": 7},
    "03_top_k": {"sample_prompt": "HAMLET:\nTo be, or not to be", "seed": 3, "prompt": "JULIET:\nO Romeo", "k": 20},
    "04_top_p": {"prompt": "FALSTAFF:\nI"},
    "05_controlling_the_loop": {"prompt": "JULIET:", "prompts": ["KING:\nMy lord", "NURSE:\nMadam", "ROMEO:\nI will"],
                                "sample_prompts": ["JULIET:\nO", "KING:"], "seed": 4},
    "06_beam_search": {"text": "JULIET:\nO Romeo", "seed": 5},
    "07_kv_cache": {"prompt_text": "JULIET:\nO", "timing_prompt": "HAMLET:\nTo be, or not to be, that is the question:\n",
                    "batch_prompts": ["QUEEN:", "JULIET:\nO Romeo, Romeo"]},
    "09_determinism": {"prompt": "JULIET:\nO Romeo", "noise_prompt": "HAMLET:\nTo be, or not to be", "seed": 7},
    "12_memory_bound": {"seed": 1, "prompt_len": 8, "new_tokens": 12, "rounds": 3},
    "13_serving_many_users": {"seed": 1, "num_requests": 6, "max_batch_size": 3, "block_size": 8, "rounds": 2},
    "14_watermarks": {"prompt": "JULIET:\nO Romeo", "seed": 1},
    "10_constrained_decoding": {"speech": "Romeo.\nSee how she leans her cheek upon her hand!\nO that I were a glove "
                                          "upon that hand,\nThat I might touch that cheek!",
                                "options": ["Juliet.", "Mercutio.", "Nurse.", "Benvolio."],
                                "number_prompt": "Prince Henry.\nHow many hours are there in the day? I say", "seed": 1},
}


def parameters_cell(path: Path):
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    return code[0]


def defaults(path: Path) -> dict:
    """The parameters cell's assignments, evaluated: ``{"prompt": "ROMEO:", "seed": 0}``."""
    values = {}
    for statement in ast.parse(parameters_cell(path).source).body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise AssertionError(f"a parameters cell holds plain assignments only, got: {ast.unparse(statement)}")
        values[statement.targets[0].id] = ast.literal_eval(statement.value)
    return values


def figure_names(path: Path) -> set[str]:
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    return set(re.findall(r'save_figure\(\w+, "([^"]+)"\)', source))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_first_code_cell_holds_the_parameters(path):
    cell = parameters_cell(path)
    assert "parameters" in cell.metadata.get("tags", []), "tag the first code cell `parameters` (papermill)"
    assert defaults(path), "the parameters cell sets the chapter's inputs"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_second_run_changes_inputs_the_chapter_has(path):
    second = SECOND_RUN.get(path.stem)
    assert second, f"add another prompt and seed for {path.stem} to SECOND_RUN"
    known = defaults(path)
    assert set(second) <= set(known), f"{set(second) - set(known)} are not parameters of {path.name}"
    assert all(second[k] != known[k] for k in second)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_runs_with_other_inputs(path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIGPT_WRITE_FIGURES", "1")
    monkeypatch.setenv("MINIGPT_FIGURES_DIR", str(tmp_path / "figures"))
    papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=SECOND_RUN[path.stem],
                               kernel_name="python3", cwd=str(path.parent), progress_bar=False)
    drawn = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert drawn == figure_names(path)
