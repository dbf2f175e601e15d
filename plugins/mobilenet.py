"""`mobilenet`: keras.applications.MobileNet (v1: depthwise-separable convolutions, width
`alpha`), described as keras/src/applications/mobilenet.py builds it."""

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, BatchNormalization, DepthwiseConv2D, Dropout, GlobalPooling2D, Layer, ReLU, \
    Reshape

from .applications import WidthMultiplied, variants
from .blocks import conv, pad, pointwise

IMAGENET_ALPHAS = (0.25, 0.5, 0.75, 1.0)
#: (pointwise filters, stride) of the depthwise blocks 1..13
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))


class MobileNet(WidthMultiplied):
    imagenet_alphas = IMAGENET_ALPHAS
    top_sizes = (128, 160, 192, 224)

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(conv("conv1", int(32 * self.alpha), 3, 2, padding="same", bias=False))
        x = g(BatchNormalization("conv1_bn"), x)
        x = g(ReLU("conv1_relu", max_value=6.0), x)
        for block, (filters, stride) in enumerate(BLOCKS, start=1):
            if stride == 2:
                x = g(pad(f"conv_pad_{block}", ((0, 1), (0, 1))), x)
            x = g(DepthwiseConv2D(f"conv_dw_{block}", strides=(stride, stride), use_bias=False,
                                  padding="same" if stride == 1 else "valid"), x)
            x = g(BatchNormalization(f"conv_dw_{block}_bn"), x)
            x = g(ReLU(f"conv_dw_{block}_relu", max_value=6.0), x)
            x = g(pointwise(f"conv_pw_{block}", int(filters * self.alpha)), x)
            x = g(BatchNormalization(f"conv_pw_{block}_bn"), x)
            x = g(ReLU(f"conv_pw_{block}_relu", max_value=6.0), x)
        if self.include_top:
            x = g(GlobalPooling2D(g.auto("global_average_pooling2d"), keepdims=True), x)
            x = g(Dropout("dropout", rate=1e-3), x)
            x = g(pointwise("conv_preds", self.classes, bias=True), x)
            x = g(Reshape("reshape_2", target_shape=(self.classes,)), x)
            g(Activation("predictions", activation="softmax"), x)
        return g.layers


MOBILENETS = variants(MobileNet)


@hookimpl
def tlc_backbones():
    return MOBILENETS
