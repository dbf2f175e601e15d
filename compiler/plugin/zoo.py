"""The 40 keras.applications models as one table: a row per model, so a new variant of a family
is one line here. Plain data, imported by the registry to find a type's module without importing
any family (or pydantic, or Keras); `tlc.plugins.applications.variants` turns a family's rows
into its backbone types.

Columns: the tlc type, the keras.applications function, the family module (tlc.plugins.<family>)
that describes it, the preprocessing (`preprocess_input`'s mode: caffe, tf, torch; `none` when
the model holds its own rescaling layers and takes 0..255 images), the ImageNet size (the only
input Keras accepts with ImageNet weights and the top), the smallest input Keras accepts, the
layer that reads the image (the one adapted for other channel counts; `{type}` stands for the
type), and the family's own parameters for this variant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pretrained:
    type: str
    keras: str
    family: str
    preprocess: str
    size: int = 224
    min_size: int = 32
    first_conv: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def _rows(family: str, preprocess: str, first_conv: str, *rows: tuple, min_size: int = 32) -> list[Pretrained]:
    """A family's rows: (type, keras function, ImageNet size, parameters)."""
    return [Pretrained(kind, keras, family, preprocess, size, min_size, first_conv, params)
            for kind, keras, size, params in rows]


MODELS: tuple[Pretrained, ...] = (
    *_rows("vgg", "caffe", "block1_conv1",
           ("vgg16", "VGG16", 224, {"blocks": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))}),
           ("vgg19", "VGG19", 224, {"blocks": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))})),
    *_rows("resnet", "caffe", "conv1_conv",
           ("resnet50", "ResNet50", 224, {"blocks": (3, 4, 6, 3)}),
           ("resnet101", "ResNet101", 224, {"blocks": (3, 4, 23, 3)}),
           ("resnet152", "ResNet152", 224, {"blocks": (3, 8, 36, 3)})),
    *_rows("resnet", "tf", "conv1_conv",
           ("resnet50_v2", "ResNet50V2", 224, {"blocks": (3, 4, 6, 3), "preact": True}),
           ("resnet101_v2", "ResNet101V2", 224, {"blocks": (3, 4, 23, 3), "preact": True}),
           ("resnet152_v2", "ResNet152V2", 224, {"blocks": (3, 8, 36, 3), "preact": True})),
    *_rows("mobilenet", "tf", "conv1", ("mobilenet", "MobileNet", 224, {})),
    *_rows("mobilenet_v2", "tf", "Conv1", ("mobilenet_v2", "MobileNetV2", 224, {})),
    *_rows("mobilenet_v3", "none", "conv",
           ("mobilenet_v3_small", "MobileNetV3Small", 224, {"large": False}),
           ("mobilenet_v3_large", "MobileNetV3Large", 224, {"large": True})),
    *_rows("efficientnet", "none", "stem_conv",  # (width, depth, top dropout)
           ("efficientnet_b0", "EfficientNetB0", 224, {"scaling": (1.0, 1.0, 0.2)}),
           ("efficientnet_b1", "EfficientNetB1", 240, {"scaling": (1.0, 1.1, 0.2)}),
           ("efficientnet_b2", "EfficientNetB2", 260, {"scaling": (1.1, 1.2, 0.3)}),
           ("efficientnet_b3", "EfficientNetB3", 300, {"scaling": (1.2, 1.4, 0.3)}),
           ("efficientnet_b4", "EfficientNetB4", 380, {"scaling": (1.4, 1.8, 0.4)}),
           ("efficientnet_b5", "EfficientNetB5", 456, {"scaling": (1.6, 2.2, 0.4)}),
           ("efficientnet_b6", "EfficientNetB6", 528, {"scaling": (1.8, 2.6, 0.5)}),
           ("efficientnet_b7", "EfficientNetB7", 600, {"scaling": (2.0, 3.1, 0.5)})),
    *_rows("efficientnet_v2", "none", "stem_conv",  # (width, depth), the stage table
           ("efficientnet_v2_b0", "EfficientNetV2B0", 224, {"scaling": (1.0, 1.0), "stages": "b"}),
           ("efficientnet_v2_b1", "EfficientNetV2B1", 240, {"scaling": (1.0, 1.1), "stages": "b"}),
           ("efficientnet_v2_b2", "EfficientNetV2B2", 260, {"scaling": (1.1, 1.2), "stages": "b"}),
           ("efficientnet_v2_b3", "EfficientNetV2B3", 300, {"scaling": (1.2, 1.4), "stages": "b"}),
           ("efficientnet_v2_s", "EfficientNetV2S", 384, {"scaling": (1.0, 1.0), "stages": "s"}),
           ("efficientnet_v2_m", "EfficientNetV2M", 480, {"scaling": (1.0, 1.0), "stages": "m"}),
           ("efficientnet_v2_l", "EfficientNetV2L", 480, {"scaling": (1.0, 1.0), "stages": "l"})),
    *_rows("convnext", "none", "{type}_stem",  # (depths, projection dims)
           ("convnext_tiny", "ConvNeXtTiny", 224, {"stages": ((3, 3, 9, 3), (96, 192, 384, 768))}),
           ("convnext_small", "ConvNeXtSmall", 224, {"stages": ((3, 3, 27, 3), (96, 192, 384, 768))}),
           ("convnext_base", "ConvNeXtBase", 224, {"stages": ((3, 3, 27, 3), (128, 256, 512, 1024))}),
           ("convnext_large", "ConvNeXtLarge", 224, {"stages": ((3, 3, 27, 3), (192, 384, 768, 1536))}),
           ("convnext_xlarge", "ConvNeXtXLarge", 224, {"stages": ((3, 3, 27, 3), (256, 512, 1024, 2048))})),
    *_rows("densenet", "torch", "conv1_conv",
           ("densenet121", "DenseNet121", 224, {"blocks": (6, 12, 24, 16)}),
           ("densenet169", "DenseNet169", 224, {"blocks": (6, 12, 32, 32)}),
           ("densenet201", "DenseNet201", 224, {"blocks": (6, 12, 48, 32)})),
    *_rows("inception", "tf", "conv2d",
           ("inception_v3", "InceptionV3", 299, {"residual": False}),
           ("inception_resnet_v2", "InceptionResNetV2", 299, {"residual": True}), min_size=75),
    *_rows("xception", "tf", "block1_conv1", ("xception", "Xception", 299, {}), min_size=71),
    *_rows("nasnet", "tf", "stem_conv1",  # (penultimate filters, cells per stack, stem filters, skip reduction)
           ("nasnet_mobile", "NASNetMobile", 224, {"cells": (1056, 4, 32, False)}),
           ("nasnet_large", "NASNetLarge", 331, {"cells": (4032, 6, 96, True)})),
)


def by_family() -> dict[str, tuple[str, ...]]:
    """{family module: its types}, in table order."""
    out: dict[str, tuple[str, ...]] = {}
    for row in MODELS:
        out[row.family] = out.get(row.family, ()) + (row.type,)
    return out
