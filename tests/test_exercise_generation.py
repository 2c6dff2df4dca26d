"""The student notebooks are generated, not written: notebooks/exercises/ is what nbgrader makes of notebooks/solutions/.

`python docs/exercises.py generate` (docs/teaching.md) runs `nbgrader generate_assignment` on the solutions
notebooks, the one source, and writes the released notebooks and their .py twins to notebooks/exercises/. This
test runs the same command into a temporary folder: a solution edited without regenerating, or an exercise
notebook edited by hand, fails here. The fix is to edit the solutions notebook and run the command again.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "notebooks" / "exercises"
REGENERATE = "edit notebooks/solutions/, then run: python docs/exercises.py generate"


def text(path: Path) -> str:
    """The file as committed, less the jupytext version a .py twin's header names (not the notebook's content)."""
    return "".join(line for line in path.read_text().splitlines(keepends=True)
                   if not line.startswith("#       jupytext_version: "))


def test_the_committed_student_notebooks_are_what_nbgrader_generates(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "docs" / "exercises.py"), "generate", "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=600)
    generated = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in EXERCISES.iterdir() if p.suffix in (".ipynb", ".py"))
    assert committed == generated, f"notebooks/exercises/ holds other files than the command writes: {REGENERATE}"
    assert len(generated) == 2 * len(list((ROOT / "notebooks" / "solutions").glob("*_solutions.ipynb")))
    for name in generated:
        assert text(EXERCISES / name) == text(tmp_path / name), f"{name} differs: {REGENERATE}"
