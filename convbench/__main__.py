"""``python -m convbench`` is the ``convbench`` command."""

import sys

from convbench.cli import main

sys.exit(main())
