"""``python -m sandboxes.computestacks``: the ComputeStacks sandbox in the foreground (see ``demo.main``)."""

import sys

from sandboxes.computestacks.demo import main

sys.exit(main())
