"""Entry point for `python -m agent` and for the frozen initramfs binary."""

import sys

from agent.cli import main

sys.exit(main())
