"""`python -m samtasks.cli` (as torchrun launches it)."""

import sys

from samtasks.cli import main

sys.exit(main())
