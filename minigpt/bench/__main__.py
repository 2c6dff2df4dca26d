"""``python -m minigpt.bench``: the same as ``minigpt bench``."""

import sys

from minigpt.bench.command import main

sys.exit(main())
