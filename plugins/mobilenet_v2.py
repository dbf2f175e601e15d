"""`mobilenet_v2`: keras.applications.MobileNetV2 (inverted residual blocks, width `alpha`),
described as keras/src/applications/mobilenet_v2.py builds it."""

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Add, BatchNormalization, Conv2D, DepthwiseConv2D, Layer, ReLU, ZeroPadding2D

from .applications import WidthMultiplied, variants
from .blocks import classifier, round_filters, pointwise

IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
#: (filters, stride, expansion) of blocks 0..16
BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
          (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
          (320, 1, 6))


class MobileNetV2(WidthMultiplied):
    imagenet_alphas = IMAGENET_ALPHAS
    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        channels = round_filters(32 * self.alpha)
        x = g(Conv2D("Conv1", filters=channels, kernel_size=(3, 3), strides=(2, 2), padding="same", use_bias=False))
        x = g(BatchNormalization("bn_Conv1"), x)
        x = g(ReLU("Conv1_relu", max_value=6.0), x)
        for block_id, (filters, stride, expansion) in enumerate(BLOCKS):
            x, channels = self._inverted_residual(g, x, channels, filters, stride, expansion, block_id)
        last = round_filters(1280 * self.alpha) if self.alpha > 1.0 else 1280
        x = g(Conv2D("Conv_1", filters=last, kernel_size=(1, 1), use_bias=False), x)
        x = g(BatchNormalization("Conv_1_bn"), x)
        x = g(ReLU("out_relu", max_value=6.0), x)
        if self.include_top:
            classifier(g, x, self.classes, pooling="global_average_pooling2d")
        return g.layers

    def _inverted_residual(self, g: Graph, inputs: str, channels: int, filters: int, stride: int,
                           expansion: int, block_id: int) -> tuple[str, int]:
        out = round_filters(int(filters * self.alpha))
        prefix, x = f"block_{block_id}_", inputs
        if block_id:
            x = g(pointwise(f"{prefix}expand", expansion * channels), x)
            x = g(BatchNormalization(f"{prefix}expand_BN"), x)
            x = g(ReLU(f"{prefix}expand_relu", max_value=6.0), x)
        else:
            prefix = "expanded_conv_"
        if stride == 2:
            x = g(ZeroPadding2D(f"{prefix}pad", correct_for=3), x)
        x = g(DepthwiseConv2D(f"{prefix}depthwise", strides=(stride, stride), use_bias=False,
                              padding="same" if stride == 1 else "valid"), x)
        x = g(BatchNormalization(f"{prefix}depthwise_BN"), x)
        x = g(ReLU(f"{prefix}depthwise_relu", max_value=6.0), x)
        x = g(pointwise(f"{prefix}project", out), x)
        x = g(BatchNormalization(f"{prefix}project_BN"), x)
        if channels == out and stride == 1:
            x = g(Add(f"{prefix}add"), inputs, x)
        return x, out


MOBILENETS_V2 = variants(MobileNetV2)


@hookimpl
def tlc_backbones():
    return MOBILENETS_V2
