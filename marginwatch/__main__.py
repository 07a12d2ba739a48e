"""``python -m marginwatch``: the same as the ``marginwatch`` console script."""

import sys

from marginwatch.cli.main import main

sys.exit(main())
