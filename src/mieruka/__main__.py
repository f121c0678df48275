"""``python -m mieruka`` runs the command line (also what ``torchrun … -m mieruka`` starts)."""

import sys

from mieruka.cli import main

sys.exit(main())
