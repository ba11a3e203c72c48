"""One log setup for every process (launcher, API, workers), in one of two formats.

* ``text`` (default at a terminal): ``time level [pid] logger: message key=value ...``.
* ``json`` (the container images and manifests): one JSON object per line —
  ``time``, ``level``, ``logger``, ``pid``, ``message`` and the event's fields —
  for a log pipeline to index without parsing free text.

Events carry their fields as ``extra={...}`` (request id, status, latency,
batch size, ...), so both formats show the same facts. Review text is never a
field: reviews can carry personal data, and a test greps every process's log
for a text it sent.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

from pythonjsonlogger.orjson import OrjsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
JSON_FIELDS = "{levelname}{name}{process}{message}"
JSON_RENAMES = {"levelname": "level", "name": "logger", "process": "pid"}

# Attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """The readable format, with an event's fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD]
        return f"{line} {' '.join(fields)}" if fields else line


def formatter(log_format: str = "text") -> logging.Formatter:
    if log_format == "json":
        return OrjsonFormatter(JSON_FIELDS, style="{", rename_fields=JSON_RENAMES, timestamp="time")  # ISO 8601, UTC
    return TextFormatter()


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Log to stderr in ``log_format``; libraries' loggers (gunicorn's included) go through the same handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


_GLOG_PREFIX = re.compile(r"[IWEF]\d{4} ")
_GLOG_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
# Lines TensorFlow writes as errors that are not: logged at DEBUG, so that an error in a worker's log is one.
BENIGN_NATIVE_LINES = re.compile(
    "|".join(
        [
            r"Error parsing text-format tensorflow\.XlaSerializedCacheEntry",  # a cache entry is tried as text, then read as binary
            r"Loading XLA:CPU AOT result\. Target machine feature",  # a compiled program loaded from the cache names its CPU features
            r"failed call to cuInit",  # no GPU on this machine: TensorFlow runs on the CPU
            r"oneDNN supports DT_\w+ only on platforms with AVX-512",  # oneDNN's own kernels give way to Eigen's
        ]
    )
)


def capture_native_stderr() -> None:
    """Turn what C++ libraries write straight to file descriptor 2 into log records.

    TensorFlow logs through absl before anyone can initialise it, so its lines
    ignore ``TF_CPP_MIN_LOG_LEVEL``, would break a JSON-lines stream, and call
    some harmless events errors (`BENIGN_NATIVE_LINES`). Here fd 2
    becomes a pipe that a thread reads: each line is logged by the ``native``
    logger (glog-style ``I``/``W``/``E``/``F`` prefixes give the level), while the
    log handler keeps writing to the real stderr.
    """
    real_stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(real_stderr)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    native = logging.getLogger("native")

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    level = _GLOG_LEVELS[line[0]] if _GLOG_PREFIX.match(line) else logging.WARNING
                    native.log(logging.DEBUG if BENIGN_NATIVE_LINES.search(line) else level, line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()
