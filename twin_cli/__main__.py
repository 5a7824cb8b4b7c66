"""``python -m twin_cli ...`` runs the ``twin`` command."""

import sys

from twin_cli.cli import main

sys.exit(main())
