"""The run's TensorBoard log (`runs/<name>/logs/`)."""
from __future__ import annotations

from tlc.layout import RunLayout


class TensorBoardLog:
    """`runs/<name>/logs/{train,validation}`: one scalar per metric per epoch (chief only)."""

    def __init__(self, folder, enabled: bool):
        self.writers = None
        if enabled:
            import tensorflow as tf

            self.writers = {part: tf.summary.create_file_writer(str(RunLayout(folder).logs / part))
                            for part in ("train", "validation")}

    def write(self, epoch: int, row: dict) -> None:
        if not self.writers:
            return
        import tensorflow as tf

        for key, value in row.items():
            if key == "epoch":
                continue
            part, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[part].as_default():
                tf.summary.scalar(name, value, step=epoch)
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in (self.writers or {}).values():
            writer.close()

    @classmethod
    def replay(cls, folder, rows: list[dict], enabled: bool) -> None:
        """The log of a run that kept none while it trained, written from its history."""
        log = cls(folder, enabled)
        for row in rows:
            log.write(row["epoch"], row)
        log.close()
