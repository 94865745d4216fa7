"""``python -m chaos.toxiproxy``: see :mod:`chaos.toxiproxy.server`."""

import sys

from chaos.toxiproxy.server import main

sys.exit(main())
