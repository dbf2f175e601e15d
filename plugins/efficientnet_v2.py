"""`efficientnet_v2_b0` ... `_b3`, `_s`, `_m`, `_l`: keras.applications EfficientNetV2
(fused and depthwise MBConv blocks), described as keras/src/applications/efficientnet_v2.py
builds them. The model rescales 0..255 images itself (B0-B3 with 3 channels also normalize with
ImageNet statistics; otherwise Keras rescales to [-1, 1])."""

import math
from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, BatchNormalization, Layer, Normalization, Rescaling

from .applications import Application, preprocess, variants
from .blocks import conv, mbconv, round_filters
from .efficientnet import top

#: (kernel, repeats, filters in, filters out, expand ratio, se ratio, strides, fused) per stage
STAGES = {
    "b": ((3, 1, 32, 16, 1, 0, 1, True), (3, 2, 16, 32, 4, 0, 2, True), (3, 2, 32, 48, 4, 0, 2, True),
          (3, 3, 48, 96, 4, 0.25, 2, False), (3, 5, 96, 112, 6, 0.25, 1, False), (3, 8, 112, 192, 6, 0.25, 2, False)),
    "s": ((3, 2, 24, 24, 1, 0, 1, True), (3, 4, 24, 48, 4, 0, 2, True), (3, 4, 48, 64, 4, 0, 2, True),
          (3, 6, 64, 128, 4, 0.25, 2, False), (3, 9, 128, 160, 6, 0.25, 1, False),
          (3, 15, 160, 256, 6, 0.25, 2, False)),
    "m": ((3, 3, 24, 24, 1, 0, 1, True), (3, 5, 24, 48, 4, 0, 2, True), (3, 5, 48, 80, 4, 0, 2, True),
          (3, 7, 80, 160, 4, 0.25, 2, False), (3, 14, 160, 176, 6, 0.25, 1, False),
          (3, 18, 176, 304, 6, 0.25, 2, False), (3, 5, 304, 512, 6, 0.25, 1, False)),
    "l": ((3, 4, 32, 32, 1, 0, 1, True), (3, 7, 32, 64, 4, 0, 2, True), (3, 7, 64, 96, 4, 0, 2, True),
          (3, 10, 96, 192, 4, 0.25, 2, False), (3, 19, 192, 224, 6, 0.25, 1, False),
          (3, 25, 224, 384, 6, 0.25, 2, False), (3, 7, 384, 640, 6, 0.25, 1, False)),
}
DROP_CONNECT_RATE = 0.2
IMAGENET_MEAN, IMAGENET_VARIANCE = (0.485, 0.456, 0.406), (0.229 ** 2, 0.224 ** 2, 0.225 ** 2)


class EfficientNetV2(Application):
    scaling: ClassVar[tuple[float, float]]  # width, depth
    stages: ClassVar[str]  # the STAGES table

    def round_filters(self, filters: int) -> int:
        return round_filters(filters, self.scaling[0], within_90_percent=False)

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        if self.stages == "b" and channels == 3:
            x = g(Rescaling(g.auto("rescaling"), scale=1.0 / 255))
            x = g(Normalization(g.auto("normalization"), mean=IMAGENET_MEAN, variance=IMAGENET_VARIANCE), x)
        else:
            x = g(Rescaling(g.auto("rescaling"), scale=1.0 / 128.0, offset=-1))
        stages = STAGES[self.stages]
        x = g(conv("stem_conv", self.round_filters(stages[0][2]), 3, 2, padding="same", bias=False), x)
        x = g(BatchNormalization("stem_bn"), x)
        x = g(Activation("stem_activation", activation="swish"), x)
        repeats = [int(math.ceil(self.scaling[1] * stage[1])) for stage in stages]
        b, blocks = 0, float(sum(stage[1] for stage in stages))
        for i, ((kernel, _, f_in, f_out, expand, se, strides, fused), n) in enumerate(zip(stages, repeats)):
            f_in, f_out = self.round_filters(f_in), self.round_filters(f_out)
            for j in range(n):
                if j > 0:
                    strides, f_in = 1, f_out
                x = mbconv(g, x, f"block{i + 1}{chr(j + 97)}_", f_in, f_out, kernel, strides, expand, se,
                           DROP_CONNECT_RATE * b / blocks, fused=fused, depthwise="dwconv2", pad_strided=False)
                b += 1
        top(g, x, self.round_filters(1280), self.classes if self.include_top else None, 0.2)
        return g.layers

    def preprocess(self, images):
        """0..255 images for the model's own layers. B0-B3 at other than 3 channels: Keras swaps
        their ImageNet normalization for a rescaling to [-1, 1], so tlc feeds the values that this
        rescaling turns into the normalization with the statistics averaged over RGB (the
        contract's channel rule; the ImageNet weights see what they were trained on)."""
        if self.stages != "b" or int(images.shape[-1]) == 3:
            return preprocess(images, "none")
        return (preprocess(images, "torch") + 1.0) * 128.0


EFFICIENTNETS_V2 = variants(EfficientNetV2)


@hookimpl
def tlc_backbones():
    return EFFICIENTNETS_V2
