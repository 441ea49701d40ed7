"""Glue shared by the thin rule scripts: logging to the rule's log file, thread setup."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_rule(snakemake, name: str | None = None) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions of a rule script to its ``log:`` file."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name or "clip_interp")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    for handler in (logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logging.captureWarnings(True)
    threads = int(getattr(snakemake, "threads", 1) or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return logger


def run_rule(snakemake, main) -> None:
    """Run ``main(snakemake, logger)``; log and re-raise any error so Snakemake marks the job failed."""
    logger = setup_rule(snakemake)
    try:
        main(snakemake, logger)
    except Exception as exc:
        logger.exception("%s: %s", type(exc).__name__, exc)
        raise
