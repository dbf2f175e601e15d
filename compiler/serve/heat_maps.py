"""Grad-CAM for `POST /explain`: `tlc explain`'s heat maps over the served predictor, built on
the first request, and the pictures the route answers with."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .uploads import BadRequest


class HeatMaps:
    def __init__(self, run: Any, predictor: Any):
        self.run, self.predictor = run, predictor

    def class_index(self, name: str | None) -> int | None:
        """`?class=NAME` of /explain: its index (None: the top prediction); an unknown name is a 400."""
        from tlc.errors import UsageError
        from tlc.use.explain import class_index

        try:
            return class_index(self.run.classes, name, option="class")
        except UsageError as exc:
            raise BadRequest(400, str(exc)) from None

    @functools.cached_property
    def explainer(self):
        """Grad-CAM over the served predictor (`tlc explain`'s), built on the first /explain."""
        from tlc.use.explain import Explainer

        return Explainer(self.run, self.predictor)

    def explain(self, image: np.ndarray, wanted: int | None, tta: str | None = None):
        return self.explainer(image[None], wanted, tta=tta)[0]

    def placement(self, contents: bytes) -> str:
        """`X-TLC-Placement`: where the input's pixels lie over the upright photo, "top,left,bottom,right"
        as fractions of its height and width (0,0,1,1 when stretched; inside it when cropped,
        beyond it when padded), so a heat map at the input size is drawn where the model looked."""
        from tlc.data.images import placement_fractions

        h, w, _ = self.run.spec.input.hwc
        return ",".join(f"{v:.6g}" for v in placement_fractions(contents, (h, w), self.predictor.fit))

    def picture_png(self, item, name: str) -> bytes:
        """`tlc explain`'s picture of one image, as PNG bytes."""
        import io

        buffer = io.BytesIO()
        self.explainer.picture([item], [name])(buffer)
        return buffer.getvalue()

    @staticmethod
    def overlay_png(item, name: str = "") -> bytes:
        """The heat map alone in `tlc explain`'s colours (jet), opaque, as an RGBA PNG at the input size."""
        import io

        import matplotlib
        from PIL import Image

        rgba = (matplotlib.colormaps["jet"](np.clip(item.heat, 0, 1)) * 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
        return buffer.getvalue()
