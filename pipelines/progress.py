"""A Dagster logger for the console: one short line per message an asset logs, nothing else.

Dagster's console logger prefixes every line with the run id and prints its own events at
DEBUG; the CLI's `demo` and `reproduce` use this one instead, so a training run reads as

    20:31:58 melu_model: seed 0 step 100 (epoch 4.7): train loss 0.9123, validation loss 0.9011, 187 users/s

Dagster's own events are shown only when they are warnings or errors (a failed step), one
line each.
"""

from __future__ import annotations

import logging
import sys

import dagster as dg


class ProgressFormatter(logging.Formatter):
    """'HH:MM:SS step: message' from the fields Dagster attaches to each record."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        message = meta.get("orig_message") or record.getMessage()
        if meta.get("dagster_event") is not None:
            # Dagster's own event (a warning, a failed step): its first line. The CLI reports
            # the error itself in one line (pipelines/cli.py main), tracebacks only for bugs.
            message = (message.strip().splitlines() or [""])[0]
        step = meta.get("step_key")
        clock = self.formatTime(record, "%H:%M:%S")
        return f"{clock} {step}: {message}" if step else f"{clock} {message}"


class AssetMessages(logging.Filter):
    """Messages assets log (INFO and up), and Dagster's own events from WARNING up."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        return meta.get("dagster_event") is None or record.levelno >= logging.WARNING


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="Short progress lines on stdout: what assets log, and Dagster's warnings and errors.",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("paml.progress")
    logger.setLevel(init_context.logger_config["log_level"])
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(ProgressFormatter())
        handler.addFilter(AssetMessages())
        logger.addHandler(handler)
    return logger


LOGGERS = {**dg.default_loggers(), "progress": progress_logger}
