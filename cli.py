"""Shim so `python cli.py ...` works from a checkout: the real app is `dreamgym.cli`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from dreamgym.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
