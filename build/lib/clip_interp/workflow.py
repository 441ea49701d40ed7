"""Glue shared by the thin rule scripts: logging to the rule's log file, thread setup, error style.

Error style of every rule: bad input (:class:`~clip_interp.errors.InputError`) ends the job with
one line on stderr saying what is wrong, where (file, key or value) and how to fix it, and the
name of the log file; the traceback goes to the log file only. Any other exception is a bug: its
traceback goes to both. Outputs are written atomically (:mod:`clip_interp.io`), so a failed job
leaves nothing that looks finished.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import InputError
from .io import inherit_exclusions

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _WithoutTraceback(logging.Formatter):
    """A formatter that leaves out a record's traceback (it is written to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(plain)


def setup_rule(snakemake, name: str | None = None) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions of a rule script to its ``log:`` file."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name or "clip_interp")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    file_handler = logging.FileHandler(log_path, mode="w")
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    stream_handler = logging.StreamHandler(sys.stderr)
    stream_handler.setFormatter(_WithoutTraceback(LOG_FORMAT))
    logger.addHandler(file_handler)
    logger.addHandler(stream_handler)
    logging.captureWarnings(True)
    threads = int(getattr(snakemake, "threads", 1) or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return logger


def _log_inherited_exclusions(snakemake, logger: logging.Logger) -> None:
    """Record in the log, and in every table the rule writes, what its input tables left out."""
    for record in inherit_exclusions(list(snakemake.input)):
        logger.info("inherited exclusion: %d instance(s) left out by %s (%s: %s)", record["count"],
                    record["table"], record["reason"], record["description"])


def run_rule(snakemake, main) -> None:
    """Run ``main(snakemake, logger)`` with the error style of the module docstring.

    Bad input exits with status 1 after the one-line message; another error is re-raised.
    """
    logger = setup_rule(snakemake)
    try:
        _log_inherited_exclusions(snakemake, logger)
        main(snakemake, logger)
    except InputError as exc:
        logger.error("%s (traceback in %s)", exc, snakemake.log[0], exc_info=True)
        raise SystemExit(1) from None
    except Exception as exc:
        logger.exception("%s: %s", type(exc).__name__, exc)
        raise
