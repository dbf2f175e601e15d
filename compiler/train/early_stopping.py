"""`train.early_stopping`, with its memory in the run's state so that it resumes."""
from __future__ import annotations


class EarlyStopping:
    """`train.early_stopping`: stop a phase once `monitor` has not improved for `patience` epochs.
    Its memory (best value, best epoch, epochs waited) lives in the run's state, so it resumes."""

    def __init__(self, spec, memory: dict, higher: bool = False):
        self.spec, self.memory, self.higher = spec, memory, higher

    @property
    def mode(self) -> str:
        return "max" if self.higher else "min"

    def update(self, epoch: int, row: dict) -> bool:
        """Record `row`; True when the phase should stop now. Returns whether this epoch is the best."""
        value = row.get(self.spec.monitor)
        best = self.memory.get("best")
        better = value is not None and (best is None or (value > best if self.mode == "max" else value < best))
        if better:
            self.memory.update(best=value, best_epoch=epoch, wait=0)
        else:
            self.memory["wait"] = self.memory.get("wait", 0) + 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.memory.get("wait", 0) > self.spec.patience

    def reason(self, epoch: int) -> dict:
        m = self.memory
        return {"epoch": epoch, "monitor": self.spec.monitor, "best": m.get("best"),
                "best_epoch": m.get("best_epoch"), "patience": self.spec.patience,
                "restored_best": self.spec.restore_best,
                "reason": f"{self.spec.monitor} did not improve for {self.spec.patience + 1} epochs after its best "
                          f"({m.get('best'):.4f} at epoch {m.get('best_epoch', 0) + 1})"}
