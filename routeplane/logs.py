"""Logging set-up: one format for the gateway's own loggers."""

from __future__ import annotations

import logging


def configure_logging(level: str = "info") -> None:
    logger = logging.getLogger("routeplane")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
