"""`python -m shark_hf.cli`: the same as `shark-hf`."""

import sys

from . import main

sys.exit(main())
