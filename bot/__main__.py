"""``python -m bot``: the ``sluice`` command."""

import sys

from bot.cli import main

sys.exit(main())
