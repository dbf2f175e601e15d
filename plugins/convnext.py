"""`convnext_tiny` ... `convnext_xlarge`: keras.applications ConvNeXt, described as
keras/src/applications/convnext.py builds them: a patchify stem and downsampling blocks that
are `Sequential` layers, blocks of a 7x7 depthwise (grouped) convolution, layer normalization,
an MLP and a LayerScale, joined by a residual `+` that is a tensor operation, not a layer.

With 3 channels the model normalizes 0..255 images itself; Keras leaves that layer out for
other channel counts, so tlc normalizes those with the ImageNet statistics averaged over RGB."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Conv2D, Dense, GlobalPooling2D, Layer, LayerNormalization, LayerScale, \
    Normalization, Sequential, Sum

from .applications import TORCH_MEAN_RGB, TORCH_STD_RGB, Application, preprocess, variants


def _norm(name: str) -> LayerNormalization:
    return LayerNormalization(name, epsilon=1e-6)


class ConvNeXt(Application):
    stages: ClassVar[tuple[tuple[int, ...], tuple[int, ...]]]  # blocks per stage, their widths

    def describe(self, channels: int = 3) -> list[Layer]:
        name = self.type  # Keras's model name, which prefixes its layers' names
        depths, dims = self.stages
        g = Graph(self.input_layer())
        x = g.layers[0].name
        if channels == 3:
            x = g(Normalization(f"{name}_prestem_normalization", mean=tuple(m * 255 for m in TORCH_MEAN_RGB),
                                variance=tuple((s * 255) ** 2 for s in TORCH_STD_RGB)), x)
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i == 0:
                inner = (Conv2D(f"{name}_stem_conv", filters=dim, kernel_size=(4, 4), strides=(4, 4)),
                         _norm(f"{name}_stem_layernorm"))
                x = g(Sequential(f"{name}_stem", layers=inner), x)
            else:
                inner = (_norm(f"{name}_downsampling_layernorm_{i - 1}"),
                         Conv2D(f"{name}_downsampling_conv_{i - 1}", filters=dim, kernel_size=(2, 2), strides=(2, 2)))
                x = g(Sequential(f"{name}_downsampling_block_{i - 1}", layers=inner), x)
            for j in range(depth):
                x = self._block(g, x, dim, f"{name}_stage_{i}_block_{j}")
        if self.include_top:
            x = g(GlobalPooling2D(f"{name}_head_gap", mode="avg"), x)
            x = g(_norm(f"{name}_head_layernorm"), x)
            g(Dense(f"{name}_head_dense", units=self.classes, activation="softmax"), x)
        else:
            g(_norm(g.auto("layer_normalization")), x)
        return g.layers

    @staticmethod
    def _block(g: Graph, inputs: str, dim: int, name: str) -> str:
        x = g(Conv2D(f"{name}_depthwise_conv", filters=dim, kernel_size=(7, 7), padding="same", groups=dim), inputs)
        x = g(_norm(f"{name}_layernorm"), x)
        x = g(Dense(f"{name}_pointwise_conv_1", units=4 * dim), x)
        x = g(Activation(f"{name}_gelu", activation="gelu"), x)
        x = g(Dense(f"{name}_pointwise_conv_2", units=dim), x)
        x = g(LayerScale(f"{name}_layer_scale", init_values=1e-6, projection_dim=dim), x)
        x = g(Activation(f"{name}_identity", activation="linear"), x)
        return g(Sum(f"{name}_residual"), inputs, x)

    def preprocess(self, images):
        """3 channels: 0..255 images for the model's own normalization; other channel counts:
        the same normalization, with the statistics averaged over RGB, done here."""
        return preprocess(images, "none" if int(images.shape[-1]) == 3 else "torch")


CONVNEXTS = variants(ConvNeXt)


@hookimpl
def tlc_backbones():
    return CONVNEXTS
