"""Sphinx configuration of the course website (Sphinx + myst-nb + sphinx-book-theme, all offline).

Build it with ``python docs/build_site.py`` (see docs/site.md): that script lays the course's sources out in
a staging folder (the repository's layout, plus the front page ``docs/_site/index.md``) and runs Sphinx on
it with this folder as the configuration directory. The notebooks are rendered from their committed outputs;
``--execute`` re-runs them. Nothing here fetches from the network: MathJax is served from the build
(``sphinx-mathjax-offline``), the theme's fonts and scripts ship with the theme, and the search index is a
local file. ``_ext/minigpt_site.py`` adds the course's own parts: the decoding explorer in chapters 2-5, a
"run this chapter" note on every notebook page and alt text for every figure.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "minigpt: a course on decoding"
author = "The minigpt authors"
copyright = "the minigpt authors, MIT licence"  # noqa: A001 (Sphinx's name)
root_doc = "index"

extensions = [
    "myst_nb",  # .md (MyST) and .ipynb pages, with the notebooks' committed outputs
    "minigpt_site",  # the explorer, the "run this chapter" notes, alt text, MathJax copied into the build
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "docs/_site", "**/.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]  # the explorer widget's view, replaced by the live page

# MathJax 3 from the PyPI package sphinx-mathjax-offline, copied into _static/mathjax by minigpt_site (its own
# Sphinx extension is not declared safe for parallel reading, so the copy is done there): no CDN for the formulas
mathjax_path = "mathjax/tex-chtml.js"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3  # README-style [text](#a-heading) links resolve
# the build renders the committed outputs; MINIGPT_SITE_EXECUTE=1 (build_site.py --execute) re-runs every notebook
nb_execution_mode = "force" if os.environ.get("MINIGPT_SITE_EXECUTE") == "1" else "off"
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_ipywidgets_js = {}  # no require.js / widget manager from a CDN: the explorer is embedded as its own page
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "minigpt: a course on decoding"
html_static_path = []
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
# search from file:// too: Sphinx's result summaries fetch() each page, which browsers refuse on file:// (CORS)
html_show_search_summary = False
html_context = {"default_mode": "auto"}  # the theme's light/dark switch starts from a valid mode (no console error)
html_theme_options = {
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
}
