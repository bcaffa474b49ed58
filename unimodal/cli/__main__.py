"""``python -m unimodal.cli``."""
import sys

from .main import main

sys.exit(main())
