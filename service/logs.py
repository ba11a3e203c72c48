"""One log format for every process, so that the launcher's merged output stays readable."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=FORMAT, force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
