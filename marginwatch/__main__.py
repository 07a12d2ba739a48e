"""``python -m marginwatch``: the same as the ``marginwatch`` console script."""

import sys

from marginwatch.cli import main

sys.exit(main())
