"""Deprecated: the grid flow is ``flows.grid`` (``python -m flows.grid``); this name stays for one
release so scripts that run ``python -m flows.compare`` keep working, with a note."""

from __future__ import annotations

import sys

from flows.grid import main

if __name__ == "__main__":
    print("python -m flows.compare is deprecated: use python -m flows.grid", file=sys.stderr)
    raise SystemExit(main())
