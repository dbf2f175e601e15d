"""`none`: no head; the model's output is the backbone's output (a feature extractor)."""

from typing import ClassVar, Literal

from tlc import hookimpl
from tlc.plugin.components import Head
from tlc.plan.layers import Layer, Shape


class NoHead(Head):
    type: Literal["none"] = "none"

    tasks: ClassVar[tuple[str, ...]] = ("features",)  # the backbone's output itself: nothing to train

    def layers(self, feature_shape: Shape) -> list[Layer]:
        return []


@hookimpl
def tlc_heads():
    return [NoHead]
