"""``python -m llm_adapter``."""

import sys

from llm_adapter.cli import main

sys.exit(main())
