"""Import Keras/TensorFlow without their C++ start-up chatter on the user's terminal.

TensorFlow 2.21 prints absl/oneDNN notices from its shared libraries while they load, even with
TF_CPP_MIN_LOG_LEVEL=3. We point file descriptor 2 at /dev/null only while the import runs;
errors raised by the import still propagate normally. `--debug` skips this.
"""
from __future__ import annotations

import contextlib
import os
import sys

_done = False


@contextlib.contextmanager
def fd2_silenced():
    """Point file descriptor 2 at /dev/null for the duration (C libraries write there directly:
    TensorFlow's start-up notices, libjpeg's 'Improper call to JPEG library' on a broken file)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def show_chatter() -> None:
    """`--debug`: let TensorFlow's start-up notices through."""
    global _done
    _done = True


def import_keras_quietly() -> None:
    """Import Keras, hiding its start-up notices (unless `show_chatter` was called): for every
    command, and for planning a plugin backbone by building it."""
    global _done
    if _done or "keras" in sys.modules:
        return
    _done = True
    with fd2_silenced():
        import keras  # noqa: F401
    import logging

    logging.getLogger("tensorflow").addFilter(_not_retracing)


def _not_retracing(record) -> bool:
    """TensorFlow's "N out of the last M calls ... triggered tf.function retracing": each tune
    trial and each phase compiles a new model, so Keras traces new steps by design; the warning
    tells a user nothing they can act on (`--debug` shows it)."""
    return "triggered tf.function retracing" not in record.getMessage()
