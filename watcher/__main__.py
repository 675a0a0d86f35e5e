"""``python -m watcher`` is the same as ``pueue-watcher``."""

import sys

from watcher.cli import main

sys.exit(main())
