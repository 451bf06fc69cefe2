"""``python -m featurec``: the ``featurec`` command line."""

import sys

from ._cli import main

sys.exit(main())
