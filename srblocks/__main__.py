"""``python -m srblocks`` runs the ``srblocks`` command line."""

import sys

from srblocks.cli import main

sys.exit(main())
