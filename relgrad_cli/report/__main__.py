"""``python -m relgrad_cli.report``: the same as ``relgrad-report``."""

import sys

from .cli import main

sys.exit(main())
