"""``python -m ednn.cli``: the same as the ``ednn`` command."""

import sys

from . import main

sys.exit(main())
