"""``python -m SAMSegmenterWeb``: serve the web app (options: ``--help``)."""

import sys

from SAMSegmenterWeb.cli import main

sys.exit(main())
