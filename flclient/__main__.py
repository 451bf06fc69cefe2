"""``python -m flclient``: the ``flclient`` command line."""

import sys

from ._cli import main

sys.exit(main())
