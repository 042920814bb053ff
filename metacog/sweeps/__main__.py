"""``python -m metacog.sweeps worker …``: a sweep's worker process (see
:func:`metacog.sweeps.executors.main`)."""
import sys

from metacog.sweeps.executors import main

sys.exit(main())
