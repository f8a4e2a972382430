"""``python -m coordexp``: see :mod:`coordexp.cli.main`."""

from coordexp.cli.main import main

raise SystemExit(main())
