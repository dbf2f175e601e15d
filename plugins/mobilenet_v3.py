"""`mobilenet_v3_small` and `mobilenet_v3_large`: keras.applications MobileNetV3 (width `alpha`,
`minimalistic`), described as keras/src/applications/mobilenet_v3.py builds them. Its hard
sigmoid, `relu6(x + 3) / 6`, is two tensor operations around a ReLU layer: they sit in the
graph but, as in Keras's `model.layers`, have no index. The model rescales 0..255 images itself."""

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, Affine, BatchNormalization, DepthwiseConv2D, Dropout, Flatten, \
    GlobalPooling2D, Layer, Multiply, ReLU, Rescaling, ZeroPadding2D

from .applications import Application, variants
from .blocks import conv, round_filters, pointwise

#: (expansion, filters, kernel (None: the variant's), stride, squeeze-excite, hard swish) per block
SMALL = ((1, 16, 3, 2, True, False), (72 / 16, 24, 3, 2, False, False), (88 / 24, 24, 3, 1, False, False),
         (4, 40, None, 2, True, True), (6, 40, None, 1, True, True), (6, 40, None, 1, True, True),
         (3, 48, None, 1, True, True), (3, 48, None, 1, True, True), (6, 96, None, 2, True, True),
         (6, 96, None, 1, True, True), (6, 96, None, 1, True, True))
LARGE = ((1, 16, 3, 1, False, False), (4, 24, 3, 2, False, False), (3, 24, 3, 1, False, False),
         (3, 40, None, 2, True, False), (3, 40, None, 1, True, False), (3, 40, None, 1, True, False),
         (6, 80, 3, 2, False, True), (2.5, 80, 3, 1, False, True), (2.3, 80, 3, 1, False, True),
         (2.3, 80, 3, 1, False, True), (6, 112, 3, 1, True, True), (6, 112, 3, 1, True, True),
         (6, 160, None, 2, True, True), (6, 160, None, 1, True, True), (6, 160, None, 1, True, True))


class MobileNetV3(Application):
    alpha: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="the width multiplier")
    minimalistic: bool = Field(False, description="3x3 kernels, ReLU only and no squeeze-and-excite (faster)")

    large: ClassVar[bool]
    top_sizes = ()  # Keras takes any size with the top (its pooling is global)

    @model_validator(mode="after")
    def _imagenet_variants(self) -> "MobileNetV3":
        allowed = (1.0,) if self.minimalistic else (0.75, 1.0)
        if self.weights == "imagenet" and self.alpha not in allowed:
            raise ValueError(f"imagenet weights exist for alpha {' and '.join(map(str, allowed))}"
                             f"{' when minimalistic' if self.minimalistic else ''}; received: {self.alpha}")
        return self

    def keras_arguments(self) -> dict:
        return {"alpha": self.alpha, "minimalistic": self.minimalistic}

    def _activate(self, g: Graph, x: str, hard_swish: bool) -> str:
        if hard_swish and not self.minimalistic:
            return g(Activation(g.auto("activation"), activation="hard_swish"), x)
        return g(ReLU(g.auto("re_lu")), x)

    def describe(self, channels: int = 3) -> list[Layer]:
        g = Graph(self.input_layer())
        x = g(Rescaling(g.auto("rescaling"), scale=1.0 / 127.5, offset=-1.0))
        x = g(conv("conv", 16, 3, 2, padding="same", bias=False), x)
        x = g(BatchNormalization("conv_bn"), x)
        x = self._activate(g, x, True)
        filters = 16
        for block_id, (expansion, out, kernel, stride, se, hard) in enumerate(LARGE if self.large else SMALL):
            kernel = kernel or (3 if self.minimalistic else 5)
            x, filters = self._block(g, x, filters, expansion, round_filters(out * self.alpha), kernel, stride,
                                     se and not self.minimalistic, hard, block_id)
        x = g(pointwise("conv_1", round_filters(filters * 6)), x)
        x = g(BatchNormalization("conv_1_bn"), x)
        x = self._activate(g, x, True)
        if self.include_top:
            last = 1280 if self.large else 1024
            x = g(GlobalPooling2D(g.auto("global_average_pooling2d"), keepdims=True), x)
            x = g(pointwise("conv_2", round_filters(last * self.alpha) if self.alpha > 1.0 else last, bias=True), x)
            x = self._activate(g, x, True)
            x = g(Dropout(g.auto("dropout"), rate=0.2), x)
            x = g(pointwise("logits", self.classes, bias=True), x)
            x = g(Flatten(g.auto("flatten")), x)
            g(Activation("predictions", activation="softmax"), x)
        return g.layers

    def _block(self, g: Graph, x: str, infilters: int, expansion: float, filters: int, kernel: int, stride: int,
               se: bool, hard: bool, block_id: int) -> tuple[str, int]:
        shortcut, prefix = x, "expanded_conv_"
        expanded = round_filters(infilters * expansion)
        if block_id:
            prefix = f"expanded_conv_{block_id}_"
            x = g(pointwise(f"{prefix}expand", expanded), x)
            x = g(BatchNormalization(f"{prefix}expand_bn"), x)
            x = self._activate(g, x, hard)
        else:
            expanded = infilters
        if stride == 2:
            x = g(ZeroPadding2D(f"{prefix}depthwise_pad", correct_for=kernel), x)
        x = g(DepthwiseConv2D(f"{prefix}depthwise", kernel_size=(kernel, kernel), strides=(stride, stride),
                              padding="same" if stride == 1 else "valid", use_bias=False), x)
        x = g(BatchNormalization(f"{prefix}depthwise_bn"), x)
        x = self._activate(g, x, hard)
        if se:
            x = self._squeeze_excite(g, x, expanded, prefix)
        x = g(pointwise(f"{prefix}project", filters), x)
        x = g(BatchNormalization(f"{prefix}project_bn"), x)
        if stride == 1 and infilters == filters:
            x = g(Add(f"{prefix}add"), shortcut, x)
        return x, filters

    @staticmethod
    def _squeeze_excite(g: Graph, inputs: str, filters: int, prefix: str) -> str:
        x = g(GlobalPooling2D(f"{prefix}squeeze_excite_avg_pool", keepdims=True), inputs)
        x = g(pointwise(f"{prefix}squeeze_excite_conv", round_filters(filters * 0.25), bias=True), x)
        x = g(ReLU(f"{prefix}squeeze_excite_relu"), x)
        x = g(pointwise(f"{prefix}squeeze_excite_conv_1", filters, bias=True), x)
        x = g(Affine(f"{prefix}hard_sigmoid_add", offset=3.0), x)  # hard sigmoid: relu6(x + 3) / 6
        x = g(ReLU(g.auto("re_lu"), max_value=6.0), x)
        x = g(Affine(f"{prefix}hard_sigmoid_scale", scale=1.0 / 6.0), x)
        return g(Multiply(f"{prefix}squeeze_excite_mul"), inputs, x)


MOBILENETS_V3 = variants(MobileNetV3)


@hookimpl
def tlc_backbones():
    return MOBILENETS_V3
