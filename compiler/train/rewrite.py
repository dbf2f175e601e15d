"""The graph a phase trains: the model's own function, computed with faster kernels.

Keras 3's BatchNormalization computes its moments and normalizes in separate operations; on a
decoder's full-resolution maps of 8-16 channels, its forward and backward pass take 3.4x the time
of TensorFlow's fused kernel (FusedBatchNormV3; oneDNN's on a CPU). And a decoder's nearest 2x
upsampling followed by a 3x3 convolution does 36 multiply-adds per low-resolution pixel (9 taps on
each of 4 copies), where a stride-2 transposed convolution whose 4x4 kernel sums the taps that
read the same pixel does 16: the same function, not an approximation.

So a phase trains a twin of the model that calls the same layer objects, holding the same
variables, with those calls replaced. A U-Net step on MobileNetV2's taps at 256x256 takes 0.31 s
instead of 0.53. Only the twin runs faster: what is saved, exported and served is the model
itself, plain Keras layers (a `model.keras` needs no tlc to load).
"""
from __future__ import annotations

import functools


def faster(model):
    """`model`'s twin, or `model` itself when it calls nothing replaceable or its graph cannot be
    walked (Keras private API, guarded as in `cache`)."""
    import keras
    from keras import tree

    twin_of = _twin_of()
    swapped = []

    def call(layer, *args, **kwargs):
        found = twin_of(layer, args, kwargs)
        if found is None:
            return layer(*args, **kwargs)
        twin, arguments = found
        swapped.append(twin)
        return twin(arguments, **{k: v for k, v in kwargs.items() if k == "training"})

    try:
        inputs = tree.map_structure(lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype), model.input)
        outputs = model._run_through_graph(inputs, call_fn=call)
    except (AttributeError, TypeError):  # pragma: no cover
        return model
    if not swapped:
        return model
    return keras.Model(inputs, outputs, name=f"{model.name}_training")


def replaced(twin) -> list[str]:
    """The names of the layers whose calls `twin` replaced."""
    return [layer.replaces for layer in twin.layers if hasattr(layer, "replaces")]


@functools.cache
def _twin_of():
    """`twin_of(layer, args, kwargs)`: (the layer that replaces this call of `layer`, its argument), or
    None to call `layer` itself. Made on first use: the replacing layers need Keras and TensorFlow."""
    import keras
    import tensorflow as tf

    class FusedBatchNorm(keras.layers.Layer):
        """A float32 channels-last BatchNormalization (no renorm, not synchronized), in one kernel."""

        def __init__(self, norm):
            super().__init__(name=f"{norm.name}_fused", dtype=norm.dtype_policy)
            self.norm, self.replaces = norm, norm.name

        def compute_output_shape(self, shape):
            return shape

        def call(self, x, training=False):
            norm = self.norm
            channels = x.shape[-1]
            scale = norm.gamma if norm.scale else tf.ones([channels])
            offset = norm.beta if norm.center else tf.zeros([channels])
            if not (training and norm.trainable):
                return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, norm.moving_mean, norm.moving_variance,
                                                        epsilon=norm.epsilon, is_training=False)[0]
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=norm.epsilon,
                                                                 is_training=True)
            n = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * (n - 1) / tf.maximum(n, 2.0)  # the kernel's is unbiased; Keras keeps the biased
            momentum = norm.momentum  # (read when traced: precise batch norm sets it to 0)
            norm.moving_mean.assign(norm.moving_mean * momentum + mean * (1.0 - momentum))
            norm.moving_variance.assign(norm.moving_variance * momentum + variance * (1.0 - momentum))
            return y

    class UpsampledConv(keras.layers.Layer):
        """A 3x3 'same' Conv2D over nearest-2x-upsampled tensors (each alone, or joined on channels
        with others at the output's size): each upsampled part as a stride-2 transposed convolution of
        the low-resolution tensor, the others as the convolution's own slice, summed."""

        def __init__(self, conv, parts: list[tuple[bool, int]]):
            super().__init__(name=f"{conv.name}_upsampled", dtype=conv.dtype_policy)
            self.conv, self.parts, self.replaces = conv, parts, conv.name

        def compute_output_shape(self, shapes):
            batch, height, width, _ = shapes[0]
            if self.parts[0][0]:  # upsampled
                height, width = (None if d is None else 2 * d for d in (height, width))
            return (batch, height, width, self.conv.filters)

        def call(self, sources):
            conv, out = self.conv, None
            # (split, not sliced: a slice's gradient is a zero-filled kernel per part, ~3% of a U-Net step)
            kernels = tf.split(conv.kernel, [channels for _, channels in self.parts], axis=2)
            for (upsampled, _), part, x in zip(self.parts, kernels, sources):
                if upsampled:
                    shape = tf.shape(x)
                    y = tf.nn.conv2d_transpose(x, _transposed(part), (shape[0], 2 * shape[1], 2 * shape[2],
                                                                      conv.filters), 2, "SAME")
                else:
                    y = tf.nn.conv2d(x, part, 1, "SAME")
                out = y if out is None else out + y
            if conv.use_bias:
                out = tf.nn.bias_add(out, conv.bias)
            return conv.activation(out)

    def _transposed(kernel):
        """The 4x4 (rows, columns, out, in) kernel of a stride-2 'same' transposed convolution equal to
        `kernel` (3x3, in, out) applied after nearest 2x upsampling: output row 2i reads low-resolution
        rows i-1 (tap 0) and i (taps 1 and 2); row 2i+1 reads i (taps 0 and 1) and i+1 (tap 2)."""
        def axis(k, a):
            t0, t1, t2 = tf.unstack(k, axis=a)
            return tf.stack([t2, t1 + t2, t0 + t1, t0], axis=a)
        return tf.transpose(axis(axis(kernel, 0), 1), (0, 1, 3, 2))

    def fusable_norm(layer, x) -> bool:
        return (isinstance(layer, keras.layers.BatchNormalization) and len(x.shape) == 4
                and layer.axis in (-1, 3) and not layer.renorm and not layer.synchronized
                and layer.compute_dtype == "float32" and x.dtype == "float32")

    def upsampled_source(x):
        """The low-resolution tensor that `x` upsamples by 2 (nearest), else None."""
        layer, node, _ = x._keras_history
        if not (isinstance(layer, keras.layers.UpSampling2D) and tuple(layer.size) == (2, 2)
                and layer.interpolation == "nearest" and layer.data_format == "channels_last"):
            return None
        return layer._inbound_nodes[node].input_tensors[0]

    def upsampled_conv(layer, x):
        if not (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (3, 3)
                and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
                and layer.padding == "same" and layer.groups == 1 and layer.data_format == "channels_last"
                and layer.compute_dtype == "float32" and not getattr(layer, "lora_enabled", False)):
            return None
        joined, node, _ = x._keras_history
        if isinstance(joined, keras.layers.Concatenate) and joined.axis in (-1, 3):
            tensors = list(joined._inbound_nodes[node].input_tensors)
        else:
            tensors = [x]
        sources = [upsampled_source(t) for t in tensors]
        if all(s is None for s in sources):
            return None
        parts = [(s is not None, int(t.shape[-1])) for s, t in zip(sources, tensors)]
        return UpsampledConv(layer, parts), [s if s is not None else t for s, t in zip(sources, tensors)]

    def twin_of(layer, args, kwargs):
        if len(args) != 1 or set(kwargs) - {"training", "mask"} or kwargs.get("mask") is not None \
                or not hasattr(args[0], "_keras_history"):
            return None
        if fusable_norm(layer, args[0]):
            return FusedBatchNorm(layer), args[0]
        return upsampled_conv(layer, args[0])

    return twin_of
