"""`python -m kindplan.cli`: the same as the `kindplan` command."""

import sys

from kindplan.cli import main

sys.exit(main())
