"""``python -m oracle.calibrate``: see :mod:`oracle.calibrate.cli`."""

from oracle.calibrate.cli import main

raise SystemExit(main())
