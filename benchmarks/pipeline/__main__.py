"""``python -m benchmarks.pipeline``."""

import sys

from benchmarks.pipeline.main import main

sys.exit(main())
