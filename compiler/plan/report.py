"""What `tlc check` and `tlc summarize` report, as the contract's JSON objects and as text."""
from __future__ import annotations

from dataclasses import dataclass

from tlc.errors import EXIT_INFEASIBLE, EXIT_INVALID, EXIT_OK, SpecError

from .layers import format_shape
from .planner import Plan


@dataclass
class Report:
    """One spec's result: the plan when it could be made, else the validation error."""

    path: str
    plan: Plan | None = None
    error: SpecError | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_INVALID
        return EXIT_OK if self.plan.ok else EXIT_INFEASIBLE

    def as_dict(self, *, layers: bool = False) -> dict:
        if self.error is not None:
            out = {"spec": self.path, "ok": False, "input_shape": None, "output_shape": None,
                   "error": {"layer": None, "message": str(self.error)},
                   "min_input": None, "params": None, "warnings": []}
            if layers:
                out["layers"] = []
            return out
        p = self.plan
        error = None
        if p.failure is not None:
            error = {"layer": p.failure.layer,
                     "input_shape": list(p.failure.input_shape) if p.failure.input_shape else None,
                     "message": p.failure_message()}
        out = {"spec": self.path, "ok": p.ok, "input_shape": list(p.input_shape),
               "output_shape": list(p.output_shape) if p.ok else None, "error": error,
               "min_input": list(p.min_input) if p.min_input else None,
               "params": p.params() if p.ok else None, "warnings": list(p.warnings)}
        if p.ok and p.freeze_batch_norm:
            out["frozen_batch_norms"] = p.frozen_batch_norms()
        if p.taps:
            out["taps"] = dict(p.taps)
        if layers:
            out["layers"] = [layer.as_dict() for layer in p.layers]
        return out

    def line(self) -> str:
        """One human line: `spec: ok: ...`, `spec: infeasible: ...`, or the located error."""
        if self.error is not None:
            return str(self.error)
        p = self.plan
        if not p.ok:
            return f"{self.path}: infeasible: {p.failure_message()}"
        params = p.params()
        smallest = f"; smallest input {format_shape(p.min_input)}" if p.min_input else ""
        bn = f", {p.frozen_batch_norms()} batch norms frozen" if p.freeze_batch_norm else ""
        return (f"{self.path}: ok: output {format_shape(p.output_shape)}, {params['total']:,} params "
                f"({params['trainable']:,} trainable, {params['non_trainable']:,} frozen{bn}){smallest}")
