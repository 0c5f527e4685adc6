"""``python -m cli ...`` is ``ig ...``."""

from cli.main import main

raise SystemExit(main())
