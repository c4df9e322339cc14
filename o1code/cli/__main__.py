"""``python -m o1code.cli``: the `o1code` command."""

import sys

from o1code.cli import main

sys.exit(main())
