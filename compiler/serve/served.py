"""The served model: the run's predictor behind one batcher, uploads decoded as `tlc predict`
decodes files, the answers' JSON and what /metadata says."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlc.layout import RunLayout

from .batching import Batcher, one_core_per_call
from .heat_maps import HeatMaps
from .uploads import BadRequest, Limits

DECODERS = 8  # threads decoding uploads (Pillow releases the GIL while it decodes)


@dataclass
class Served:
    """The run's predictor, ready to answer: decoding, the batched call, heat maps, metadata."""

    run: Any
    predictor: Any
    sha256: str
    limits: Limits
    decoders: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(DECODERS, "tlc-decode"))

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.predictor.probabilities, self.limits.max_batch)
        self.heat_maps = HeatMaps(self.run, self.predictor)

    @classmethod
    def load(cls, run, limits: Limits, *, safe_mode: bool = True) -> Served:
        """`run`: a `Run` (or its folder); its batch shapes are traced before the first request."""
        from tlc.build.weights import file_sha256
        from tlc.use.predictor import Predictor
        from tlc.use.run import Run

        one_core_per_call()
        run = Run.of(run)
        served = cls(run, Predictor.of_run(run, safe_mode=safe_mode), file_sha256(str(run.model_path)), limits)
        served.predictor.warm()
        return served

    def decode(self, name: str, contents: bytes) -> np.ndarray:
        """One uploaded image -> (h, w, c) in [0, 1], decoded as `tlc predict` decodes files
        (upright, DCT-scaled, antialiased); an undecodable part is a 400 naming it."""
        from tlc.data.images import ImageError, decode_bytes

        if not contents:
            raise BadRequest(400, f"{name}: empty")
        h, w, c = self.run.spec.input.hwc
        try:
            return decode_bytes(contents, (h, w), c, name, self.predictor.fit).astype(np.float32) / 255.0
        except ImageError as exc:
            raise BadRequest(400, str(exc)) from None

    def decode_parts(self, parts: list[tuple[str, bytes]]) -> list:
        """Each part's image, or the message saying why it is not one (a bad part costs only itself)."""
        out = []
        for name, contents in parts:
            try:
                out.append(self.decode(name, contents))
            except BadRequest as exc:
                out.append(exc.message)
        return out

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The images' scores, from the batch the batcher puts them in."""
        return await self.batcher.predict(images)

    def answer(self, parts: list[tuple[str, bytes]], decoded: list, scores: np.ndarray, top: int) -> dict:
        """/predict's answer: per part, in order, the task's answer (its top classes, tags or
        values; a segmentation's classes and its mask, a base64 PNG at the photo's own size) or
        (not an image) its error."""
        given = iter(zip(self.predictor.answers(scores, top), scores))
        predictions = []
        for (name, data), part in zip(parts, decoded):
            if isinstance(part, str):
                predictions.append({"file": name, "error": part})
                continue
            answer, row = next(given)
            if self.segmenting:
                import base64

                answer = {"mask": base64.b64encode(self.mask(data, row)).decode("ascii"), **answer}
            predictions.append({"file": name, **_served(answer)})
        return {"predictions": predictions, "model": {"name": self.run.spec.name, "sha256": self.sha256}}

    @property
    def segmenting(self) -> bool:
        return self.run.spec.task.type == "segmentation"

    def mask(self, data: bytes, outputs: np.ndarray) -> bytes:
        """The PNG of the predicted classes at the photo's own size (palette indices; background
        and ignored pixels transparent)."""
        from tlc.task.segmentation import class_colours
        from tlc.use.masks import mask_image, png_bytes

        colours = class_colours(self.predictor.record, outputs.shape[-1])
        return png_bytes(mask_image(data, outputs, colours, self.predictor.fit, self.run.spec.task.ignore_index))

    def mask_png(self, parts: list, decoded: list, scores: np.ndarray):
        """`/predict?format=png`: the first image's mask as a PNG (a 400 for another task)."""
        from starlette.responses import JSONResponse, Response

        if not self.segmenting:
            return JSONResponse({"error": "format=png: the model answers "
                                          f"{self.run.spec.task.type}, not masks"}, status_code=400)
        first = next(i for i, part in enumerate(decoded) if not isinstance(part, str))
        return Response(self.mask(parts[first][1], scores[0]), media_type="image/png")

    @functools.cached_property
    def resolved_spec(self) -> dict:
        """The run's spec.lock.yaml as data, read once."""
        import yaml

        return yaml.safe_load(RunLayout(self.run.folder).spec_lock.read_text())

    @staticmethod
    def tta_of(value: str | None) -> str | None:
        """`?tta=flip`: the test-time augmentation asked for (None: none); another value is a 400."""
        from tlc.use.formats import TTA

        if value in (None, "", "none"):
            return None
        if value not in TTA:
            raise BadRequest(400, f"tta: expected {' or '.join(TTA)} (or none), got {value!r}")
        return value

    def metadata(self) -> dict:
        task = {"type": self.run.spec.task.type, **self.predictor.record}
        if self.segmenting:
            from tlc.task.segmentation import class_colours

            task["colors"] = class_colours(self.predictor.record, len(self.run.classes)).tolist()
        return {"name": self.run.spec.name, "task": task,
                "classes": self.run.classes, "input_shape": list(self.run.spec.input.hwc),
                "sha256": self.sha256, "spec": self.resolved_spec,
                "served": {"images": self.batcher.images, "model_calls": self.batcher.calls, "max_batch": self.limits.max_batch,
                           "max_images": self.limits.max_images, "max_bytes": self.limits.max_bytes}}


def _served(answer: dict) -> dict:
    """A task's answer as /predict gives it: the top classes without their output index."""
    if "top" in answer:
        return {**answer, "top": [{"class": t["class"], "probability": t["probability"]} for t in answer["top"]]}
    return answer
