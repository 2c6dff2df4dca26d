"""The syllabus, notebooks/README.md: what a teacher plans a semester with, so its lists, links, prerequisites,
times and sums must stay true. The prerequisites live only in its table; docs/reading_order.py draws the
reading-order figure from that table, and this file checks that the two agree."""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAGE = NOTEBOOKS / "README.md"
TEXT = PAGE.read_text()
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MINUTES_PER_EXERCISE, LECTURE_MINUTES = 15, 90  # the page's estimate per checked function; a lecture's length


def load_script():
    spec = importlib.util.spec_from_file_location("reading_order", ROOT / "docs" / "reading_order.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reading_order = load_script()
WORDS_PER_MINUTE, CODE_LINES_PER_MINUTE = reading_order.WORDS_PER_MINUTE, reading_order.CODE_LINES_PER_MINUTE


def rows(header: str) -> list[list[str]]:
    """The cells of the page's table whose header row starts with `header` (the separator row skipped)."""
    lines = TEXT.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    found = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            return found
        found.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return found


SYLLABUS = {int(cells[0]): cells for cells in rows("| # | chapter | needs |")}


def number(cell: str, pattern: str) -> int:
    return int(re.search(pattern, cell)[1].replace(",", ""))


def read_minutes(chapter: int) -> int:
    return number(SYLLABUS[chapter][3], r"^(\d+) min")


def read_and_run(chapter: int) -> int:
    return number(SYLLABUS[chapter][5], r"^(\d+) min")


def exercise_minutes(chapter: int) -> int:
    return number(SYLLABUS[chapter][6], r": (\d+) min\]") if "exercises/" in SYLLABUS[chapter][6] else 0


def needs(chapter: int) -> tuple[set[int], set[int]]:
    """Parsed here independently of the script: numbers before the bracket, then "N for Step(s)" inside it."""
    cell = SYLLABUS[chapter][2]
    main, _, partial = cell.partition("(")
    return {int(n) for n in re.findall(r"\d+", main)}, {int(n) for n in re.findall(r"(\d+) for Steps? ", partial)}


def closure(chapter: int, steps: bool = False) -> set[int]:
    """Every chapter that `chapter` needs throughout, directly or through another; with `steps`, also those
    that some of its steps need (and what they need): all a reader of the whole chapter has met."""
    hard, soft = needs(chapter)
    seen, todo = set(), [*hard, *(soft if steps else ())]
    while todo:
        if (c := todo.pop()) not in seen:
            seen.add(c)
            todo += needs(c)[0] | (needs(c)[1] if steps else set())
    return seen


def test_every_chapter_exercise_and_solution_is_listed():
    linked = {(PAGE.parent / t).resolve() for t in re.findall(r"\]\(([^)#\s]+)\)", TEXT)}
    notebooks = [*CHAPTERS, *sorted(NOTEBOOKS.glob("exercises/*.ipynb")), *sorted(NOTEBOOKS.glob("solutions/*.ipynb"))]
    missing = [p.relative_to(NOTEBOOKS).as_posix() for p in notebooks if p.resolve() not in linked]
    assert not missing, f"the syllabus does not list {missing}"
    assert sorted(SYLLABUS) == [int(p.name[:2]) for p in CHAPTERS], "one table row per chapter, in order"
    for chapter, path in zip(sorted(SYLLABUS), CHAPTERS):
        assert f"]({path.name})" in SYLLABUS[chapter][1]


def test_every_link_and_image_resolves():
    import test_readme as readme

    broken = []
    for target in readme.relative_links(TEXT):
        path, _, anchor = target.partition("#")
        file = (PAGE.parent / path).resolve() if path else PAGE
        if not file.exists() or (anchor and anchor not in readme.anchors(file)):
            broken.append(target)
    assert not broken, f"notebooks/README.md links to nothing: {broken}"
    images = re.findall(r"<img[^>]*>|!\[[^\]]*\]\([^)]*\)", TEXT)
    assert images and all(re.search(r'alt="[^"]{40,}"|!\[[^\]]{40,}\]', image) for image in images), "alt text"


def test_prerequisites_form_a_dag_in_chapter_order():
    for chapter in SYLLABUS:
        hard, soft = needs(chapter)
        assert all(p < chapter and p in SYLLABUS for p in hard | soft), f"chapter {chapter} needs a later one"
        assert not hard & soft
        # each listed prerequisite is needed: not one that another listed prerequisite already brings
        for p in hard:
            assert all(p not in closure(q) for q in hard - {p}), f"chapter {chapter}: {p} is implied by another"
        assert not soft & closure(chapter), f"chapter {chapter}: a step's prerequisite is needed throughout already"
    assert needs(8)[0] == {7} and needs(12)[0] == {7}  # the examples: 8 and 12 build on the KV cache
    assert {2, 3, 4} <= closure(9, steps=True)  # and all of 9 comes after temperature, top-k and top-p
    order = []  # a topological sort finishes: no cycle
    while len(order) < len(SYLLABUS):
        ready = [c for c in SYLLABUS if c not in order and needs(c)[0] | needs(c)[1] <= set(order)]
        assert ready, "the prerequisites have a cycle"
        order.append(min(ready))


def test_the_figure_is_drawn_from_the_table(tmp_path):
    expected = sorted([(p, c, "all") for c in SYLLABUS for p in needs(c)[0]]
                      + [(p, c, "steps") for c in SYLLABUS for p in needs(c)[1]])
    assert reading_order.edges() == expected
    assert reading_order.edges(TEXT) == expected
    figure = ROOT / "figures" / "reading_order.png"
    assert figure.exists() and "](../figures/reading_order.png)" in TEXT
    fresh = reading_order.draw(out=tmp_path / "reading_order.png")  # the script still draws it, at the same size
    assert png_size(fresh) == png_size(figure)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_times_follow_the_stated_rates_and_the_measured_runs():
    assert "2026-12-07" in TEXT and "2 cores" in TEXT
    assert f"{WORDS_PER_MINUTE} words a minute" in TEXT and f"{CODE_LINES_PER_MINUTE} lines of code a minute" in TEXT
    assert f"{MINUTES_PER_EXERCISE} minutes per function" in TEXT
    for chapter, cells in SYLLABUS.items():
        words, lines = number(cells[3], r"\(([\d,]+) words"), number(cells[3], r"(\d+) code lines")
        assert read_minutes(chapter) == math.ceil(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE)
        cpu, wall = (int(n) for n in re.fullmatch(r"(\d+) s \((\d+) s\)", cells[4]).groups())
        assert read_and_run(chapter) == read_minutes(chapter) + math.ceil(cpu / 60)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_reading_times_are_current(chapter):
    """The chapters change (a recap, a step): re-count with `python docs/reading_order.py --counts`."""
    words, lines = reading_order.counts(chapter)
    now = math.ceil(words / WORDS_PER_MINUTE + lines / CODE_LINES_PER_MINUTE)
    listed = read_minutes(int(chapter.name[:2]))
    assert abs(now - listed) <= max(2, 0.2 * listed), f"{chapter.name}: now {now} min to read, the page says {listed}"


def check_cells(notebook: Path) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return sum(c["cell_type"] == "code" and "".join(c["source"]).strip().splitlines()[-1].startswith("check_")
               for c in cells)


def test_exercise_estimates_count_the_checked_functions():
    for chapter, cells in SYLLABUS.items():
        exercise = NOTEBOOKS / "exercises" / f"{CHAPTERS[chapter].stem}_exercises.ipynb"
        assert ("exercises/" in cells[6]) == exercise.exists()
        if exercise.exists():
            functions, words = number(cells[6], r"\[(\d+) functions"), number(cells[6], r"([\d,]+) words")
            assert functions == check_cells(exercise)
            assert exercise_minutes(chapter) == math.ceil(words / WORDS_PER_MINUTE) + MINUTES_PER_EXERCISE * functions


def test_the_90_minute_lecture_adds_up():
    lecture = rows("| order | chapter | minutes |")
    *steps, total = lecture
    chapters = [int(re.match(r"\[(\d+) ", cells[1])[1]) for cells in steps]
    assert [int(cells[0]) for cells in steps] == list(range(1, len(steps) + 1))
    assert [int(cells[2]) for cells in steps] == [read_and_run(c) for c in chapters]
    assert total[1] == "**total**" and int(total[2].strip("*")) == sum(int(cells[2]) for cells in steps)
    assert sum(read_and_run(c) for c in chapters) <= LECTURE_MINUTES
    in_order(chapters)


def in_order(chapters: list[int]) -> None:
    """A path meets each chapter after everything it needs throughout."""
    for i, chapter in enumerate(chapters):
        assert needs(chapter)[0] <= set(chapters[:i]), f"chapter {chapter} comes before what it needs"


@pytest.mark.parametrize("header", ["| day |", "| week |"])
def test_the_module_and_the_course_add_up(header):
    *sessions, total = rows(header)
    met, exercised = [], []
    for cells in sessions:
        chapters = [(int(c), int(m)) for c, m in re.findall(r"(\d+) \((\d+)\)", cells[1])]
        exercises = [(int(c), int(m)) for c, m in re.findall(r"(\d+) \((\d+)\)", cells[2])]
        assert all(m == read_and_run(c) for c, m in chapters) and all(m == exercise_minutes(c) for c, m in exercises)
        assert int(cells[3]) == sum(m for _, m in chapters + exercises)
        met += [c for c, _ in chapters]
        exercised += [c for c, _ in exercises]
    in_order(met)
    assert set(exercised) <= set(met) and len(set(met)) == len(met)
    assert int(total[3].strip("*")) == sum(int(cells[3]) for cells in sessions)
    if header == "| week |":  # the full course: every chapter and every exercise notebook
        assert met == sorted(SYLLABUS) and exercised == [c for c in SYLLABUS if exercise_minutes(c)]


def test_the_run_commands_are_the_readmes():
    import test_readme as readme

    blocks = re.findall(r"```bash\n(.*?)\n```", TEXT, flags=re.S)
    assert readme.BLOCKS[0] in blocks and readme.BLOCKS[1] in blocks
    assert any(block.strip().endswith("jupyter lab notebooks/") for block in blocks)


def test_objectives_for_every_chapter():
    """Each chapter's section lists 2–4 things a student can be tested on."""
    for chapter in SYLLABUS:
        section = re.search(rf"^### {chapter} .*?\n(.*?)(?=^##|\Z)", TEXT, flags=re.S | re.M)
        assert section, f"no section for chapter {chapter}"
        objectives = re.findall(r"^- ", section[1], flags=re.M)
        assert 2 <= len(objectives) <= 4, f"chapter {chapter} has {len(objectives)} objectives"


def test_the_scripts_examples():
    import doctest

    assert doctest.testmod(reading_order).failed == 0
