"""``python -m napari_labeleff.cli``."""

import sys

from . import main

sys.exit(main())
