"""`train.augment`: Keras preprocessing layers applied to training batches inside tf.data.

Randomness is stateless: every image draws from a seed made of (spec seed, epoch, example index),
so two runs of one spec see the same augmented images, a resumed run continues exactly, and
neither parallel decoding nor the batch an image lands in changes what it becomes. With
`views: K`, epoch e uses the augmentation of epoch e mod K, so the K views the feature cache
stores are exactly what an uncached run would train on.

Masks (segmentation) move with their images: each layer's one random transformation is applied to
the image and, through Keras's own `transform_segmentation_masks` (nearest neighbour), to the mask;
the photometric layers leave masks as they are.
"""
from __future__ import annotations


def _fixed_seed_class():
    import keras

    class FixedSeed(keras.random.SeedGenerator):
        """A SeedGenerator that hands out seeds derived from one seed tensor (no state, so the
        same batch always gets the same transformation)."""

        def __init__(self, seed):  # noqa: D107 - deliberately no variable (super().__init__)
            self._seed, self._draws = seed, 0

        def next(self, ordered=True):
            import tensorflow as tf

            self._draws += 1
            return self._seed + tf.constant([0, 1_000_003], tf.int64) * self._draws

    return FixedSeed


class Augmenter:
    def __init__(self, spec, seed: int):
        import keras

        L = keras.layers
        self.spec, self.seed, self.layers = spec, seed, []
        if spec.flip:
            self.layers.append(L.RandomFlip(spec.flip))
        if spec.rotation:
            self.layers.append(L.RandomRotation(spec.rotation))
        if spec.zoom:
            self.layers.append(L.RandomZoom(spec.zoom))
        if spec.translation:
            self.layers.append(L.RandomTranslation(spec.translation, spec.translation))
        if spec.contrast:
            self.layers.append(L.RandomContrast(spec.contrast, value_range=(0, 1)))
        if spec.brightness:
            self.layers.append(L.RandomBrightness(spec.brightness, value_range=(0, 1)))
        self._seed_class = _fixed_seed_class()

    def __call__(self, images, ids, epoch, masks=None):
        """Augment a batch of images in [0, 1]: image `ids[j]` in `epoch` (int64 tensors); with
        `masks` ((n, h, w) class indices), (images, masks) moved alike."""
        import tensorflow as tf

        view = tf.math.floormod(epoch, self.spec.views) if self.spec.views else epoch
        base = tf.cast(self.seed, tf.int64) * 7919 + view

        def one(args):
            image, index, mask = args if masks is not None else (*args, None)
            for i, layer in enumerate(self.layers):
                seed = self._seed_class(tf.stack([base + 104_729 * i, index]))
                transformation = layer.get_random_transformation(image, training=True, seed=seed)
                image = layer.transform_images(image, transformation, training=True)
                if mask is not None:
                    mask = layer.transform_segmentation_masks(mask, transformation, training=True)
            image = tf.clip_by_value(image, 0.0, 1.0)
            return image if mask is None else (image, mask)

        image_spec = tf.TensorSpec(images.shape[1:], tf.float32)
        if masks is None:
            return tf.map_fn(one, (images, ids), fn_output_signature=image_spec)
        planes = tf.cast(masks, tf.float32)[..., None]
        out, moved = tf.map_fn(one, (images, ids, planes),
                               fn_output_signature=(image_spec, tf.TensorSpec(planes.shape[1:], tf.float32)))
        return out, tf.cast(tf.round(moved[..., 0]), masks.dtype)
