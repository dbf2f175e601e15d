"""The `tune:` section of a spec (contract section 7), validated like the rest of the spec.

Samplers and pruners are one row each: the name a spec writes -> the Optuna class (and its
arguments) that `tune/study.py` builds; the spec's literals are these tables' keys.
"""

from typing import Annotated, Any, Literal, Union

from pydantic import Field, Strict, model_validator

from tlc.plugin.components import StrictModel

Number = Annotated[float, Field(allow_inf_nan=False)]

#: sampler name -> its class in `optuna.samplers` (grid is also given the grid of choices)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler"}
#: pruner name -> (its class in `optuna.pruners`, the arguments tlc gives it)
PRUNERS = {"none": ("NopPruner", {}), "median": ("MedianPruner", {"n_startup_trials": 3}),
           "hyperband": ("HyperbandPruner", {})}


class Choice(StrictModel):
    type: Literal["choice"] = Field(description="one of the listed values")
    values: Annotated[list[Any], Field(min_length=1)] = Field(description="the values to choose from (any YAML)")


class Uniform(StrictModel):
    type: Literal["uniform"] = Field(description="a float drawn uniformly between low and high")
    low: Number = Field(description="the smallest value")
    high: Number = Field(description="the largest value")

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low must not exceed high; received: low {self.low}, high {self.high}")
        return self


class LogUniform(Uniform):
    type: Literal["loguniform"] = Field(description="a float drawn uniformly in log space between low and high")

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0; received: {self.low}")
        return self


class IntRange(StrictModel):
    type: Literal["int"] = Field(description="an integer between low and high")
    low: Annotated[int, Strict()] = Field(description="the smallest value")
    high: Annotated[int, Strict()] = Field(description="the largest value")
    step: Annotated[int, Strict(), Field(gt=0)] = Field(1, description="values are low, low + step, ...")
    log: bool = Field(False, description="draw in log space (step must be 1)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low must not exceed high; received: low {self.low}, high {self.high}")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("log needs low > 0 and step 1")
        return self


Space = Annotated[Union[Choice, Uniform, LogUniform, IntRange], Field(discriminator="type")]


class TuneSpec(StrictModel):
    """Hyperparameter search over paths of this spec (`tlc tune`)."""

    metric: Annotated[str, Field(pattern=r"^(val_)?[a-z0-9_]+$")] = Field(
        "val_accuracy", description="what a trial is judged by: val_loss, or the task's validation metric (the "
                                    "default: val_accuracy, val_map or val_mae; a multi_label's val_f1, a "
                                    "regression's val_rmse or val_r2)")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="whether a higher metric is better (default: what the metric wants)")
    trials: Annotated[int, Strict(), Field(gt=0, le=100_000)] = Field(
        20, description="trials in the whole study, over every worker and resumption")
    timeout: Annotated[float, Field(gt=0)] | None = Field(None, description="seconds per worker (null: no limit)")
    sampler: Literal[tuple(SAMPLERS)] = Field(  # type: ignore[valid-type]
        "tpe", description="tpe, random, or grid (every combination; choice spaces only)")
    pruner: Literal[tuple(PRUNERS)] = Field(  # type: ignore[valid-type]
        "median", description="stop a trial after a clearly worse epoch: none, median or hyperband")
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32)] = Field(0, description="the sampler's seed")
    space: Annotated[dict[str, Space], Field(min_length=1)] = Field(
        description="dotted path into this spec (list items by index) -> its search space")

    @property
    def maximise(self) -> bool:
        return self.direction == "maximize" if self.direction else self.metric == "val_accuracy"

    @property
    def budget(self) -> int:
        """Trials to run: `trials`, or every combination of a grid when there are fewer."""
        if self.sampler != "grid" or self.grid_error():
            return self.trials
        combinations = 1
        for space in self.space.values():
            combinations *= len(space.values)
        return min(self.trials, combinations)

    def grid_error(self) -> tuple[str, str] | None:
        """(path, message) of a space the grid sampler cannot enumerate, or None."""
        if self.sampler != "grid":
            return None
        for path, space in self.space.items():
            if not isinstance(space, Choice):
                return path, (f"sampler grid tries every combination, so it takes choice spaces only; this one is "
                              f"{space.type} (list its values with type: choice)")
        return None
