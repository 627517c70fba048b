"""``python -m inbetween``: the same command as the ``inbetween`` script."""

from .cli import main

raise SystemExit(main())
