"""``python -m minigpt``: the same as the ``minigpt`` command.

    python -m minigpt generate "ROMEO:" --seed 0
"""

import sys

from minigpt.cli import main

sys.exit(main())
