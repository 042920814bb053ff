"""``python -m metacog.sweeps worker …``: a sweep's worker process (see :func:`metacog.sweeps.main`)."""
import sys

from metacog.sweeps import main

sys.exit(main())
