"""Logging in the scoring server: exceptions are logged without their message.

A library's exception message may quote the input it failed on (pydantic's does, and BentoML
logs such exceptions on its error paths): with borrower data that is personal data in a log.
`withhold_exception_messages` puts a filter on every handler that keeps an exception's type and
traceback (file, line, function) and drops its message and any chained exception's message.
"""

from __future__ import annotations

import logging
import traceback

WITHHELD = "(message withheld: it may quote request data)"


class WithholdExceptionMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            kind, _, trace = record.exc_info
            frames = "".join(traceback.format_tb(trace))
            record.exc_text = f"Traceback (most recent call last):\n{frames}{kind.__name__}"
            record.exc_text += f" {WITHHELD}"
            record.exc_info = None
        return True


def withhold_exception_messages() -> None:
    """Install the filter on the handlers of the root logger and of every configured logger."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, WithholdExceptionMessages) for f in handler.filters):
                handler.addFilter(WithholdExceptionMessages())
