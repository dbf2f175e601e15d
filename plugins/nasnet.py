"""`nasnet_mobile` and `nasnet_large`: keras.applications NASNet, described as
keras/src/applications/nasnet.py builds it: normal and reduction cells, each adjusting the
previous cell's output `p` to its own input `ip`.

Keras decides that adjustment by comparing widths: a reduction when they differ, a projection
when only the channels do. Every reduction halves the width (at Keras's minimum input of 32,
the width entering a reduction is at least 2), so the widths differ exactly when `p` has been
through fewer reductions than `ip`: the description tracks that count, not the sizes, and is
the same at every input size."""

from typing import ClassVar

from tlc import hookimpl
from tlc.plan.graph import Graph
from tlc.plan.layers import Activation, Add, BatchNormalization, Concatenate, Cropping2D, Layer, SeparableConv2D, \
    ZeroPadding2D

from .applications import Application, variants
from .blocks import classifier, conv, pad, pointwise, pool


class NASNet(Application):
    cells: ClassVar[tuple[int, int, int, bool]]  # penultimate filters, cells per stack, stem filters, skip reduction

    def describe(self, channels: int = 3) -> list[Layer]:
        penultimate, n, stem_filters, skip_reduction = self.cells
        filters = penultimate // 24
        g = Graph(self.input_layer())
        x = g(conv("stem_conv1", stem_filters, 3, 2, bias=False))
        x = g(BatchNormalization("stem_bn1"), x)
        cells = _Cells(g, {x: (0, stem_filters)})
        x, p = cells.reduction(x, None, filters // 4, "stem_1")
        x, p = cells.reduction(x, p, filters // 2, "stem_2")
        for stack in range(3):
            if stack:
                x, p0 = cells.reduction(x, p, filters * 2 ** stack, f"reduce_{n * stack}")
                p = p if skip_reduction else p0
            for i in range(n):
                x, p = cells.normal(x, p, filters * 2 ** stack, str(stack * n + i + (stack > 0)))
        x = g(Activation(g.auto("activation")), x)
        if self.include_top:
            classifier(g, x, self.classes, pooling=g.auto("global_average_pooling2d"))
        return g.layers


class _Cells:
    """Adds NASNet's cells to a graph, knowing each cell output's (reductions, channels)."""

    def __init__(self, g: Graph, known: dict[str, tuple[int, int]]):
        self.g, self.known = g, known

    def _relu(self, x: str) -> str:
        return self.g(Activation(self.g.auto("activation")), x)

    def _bn(self, name: str, x: str) -> str:
        return self.g(BatchNormalization(name), x)

    def _separable(self, x: str, filters: int, kernel: int, stride: int, block: str) -> str:
        g = self.g
        x = self._relu(x)
        if stride == 2:
            x = g(ZeroPadding2D(f"separable_conv_1_pad_{block}", correct_for=kernel), x)
        for k in (1, 2):
            x = g(SeparableConv2D(f"separable_conv_{k}_{block}", filters=filters, kernel_size=(kernel, kernel),
                                  strides=(stride, stride) if k == 1 else (1, 1),
                                  padding="valid" if stride == 2 and k == 1 else "same", use_bias=False), x)
            x = self._bn(f"separable_conv_{k}_bn_{block}", x)
            if k == 1:
                x = self._relu(x)
        return x

    def _adjust(self, p: str | None, ip: str, filters: int, block: str) -> str:
        g = self.g
        if p is None:
            return ip
        (p_level, p_channels), (ip_level, _) = self.known[p], self.known[ip]
        if p_level != ip_level:
            p = g(Activation(f"adjust_relu_1_{block}"), p)
            p1 = g(pool(f"adjust_avg_pool_1_{block}", 1, 2, mode="avg"), p)
            p1 = g(pointwise(f"adjust_conv_1_{block}", filters // 2), p1)
            p2 = g(pad(g.auto("zero_padding2d"), ((0, 1), (0, 1))), p)
            p2 = g(Cropping2D(g.auto("cropping2d"), cropping=((1, 0), (1, 0))), p2)
            p2 = g(pool(f"adjust_avg_pool_2_{block}", 1, 2, mode="avg"), p2)
            p2 = g(pointwise(f"adjust_conv_2_{block}", filters // 2), p2)
            p = g(Concatenate(g.auto("concatenate")), p1, p2)
        elif p_channels != filters:
            p = self._relu(p)
            p = g(pointwise(f"adjust_conv_projection_{block}", filters), p)
        else:
            return p
        p = self._bn(f"adjust_bn_{block}", p)
        self.known[p] = (ip_level, filters // 2 * 2 if p_level != ip_level else filters)
        return p

    def _head(self, ip: str, filters: int, kind: str, block: str) -> str:
        x = self._relu(ip)
        x = self.g(pointwise(f"{kind}_conv_1_{block}", filters), x)
        return self._bn(f"{kind}_bn_1_{block}", x)

    def normal(self, ip: str, p: str | None, filters: int, block: str) -> tuple[str, str]:
        g, sep = self.g, self._separable
        p = self._adjust(p, ip, filters, block)
        h = self._head(ip, filters, "normal", block)
        x1 = g(Add(f"normal_add_1_{block}"), sep(h, filters, 5, 1, f"normal_left1_{block}"),
               sep(p, filters, 3, 1, f"normal_right1_{block}"))
        x2 = g(Add(f"normal_add_2_{block}"), sep(p, filters, 5, 1, f"normal_left2_{block}"),
               sep(p, filters, 3, 1, f"normal_right2_{block}"))
        x3 = g(Add(f"normal_add_3_{block}"), g(pool(f"normal_left3_{block}", 3, 1, "avg", "same"), h), p)
        x4 = g(Add(f"normal_add_4_{block}"), g(pool(f"normal_left4_{block}", 3, 1, "avg", "same"), p),
               g(pool(f"normal_right4_{block}", 3, 1, "avg", "same"), p))
        x5 = g(Add(f"normal_add_5_{block}"), sep(h, filters, 3, 1, f"normal_left5_{block}"), h)
        x = g(Concatenate(f"normal_concat_{block}"), p, x1, x2, x3, x4, x5)
        self.known[x] = (self.known[ip][0], 6 * filters)
        return x, ip

    def reduction(self, ip: str, p: str | None, filters: int, block: str) -> tuple[str, str]:
        g, sep = self.g, self._separable
        p = self._adjust(p, ip, filters, block)
        h = self._head(ip, filters, "reduction", block)
        h3 = g(ZeroPadding2D(f"reduction_pad_1_{block}", correct_for=3), h)
        x1 = g(Add(f"reduction_add_1_{block}"), sep(h, filters, 5, 2, f"reduction_left1_{block}"),
               sep(p, filters, 7, 2, f"reduction_right1_{block}"))
        x2 = g(Add(f"reduction_add_2_{block}"), g(pool(f"reduction_left2_{block}", 3, 2), h3),
               sep(p, filters, 7, 2, f"reduction_right2_{block}"))
        x3 = g(Add(f"reduction_add3_{block}"), g(pool(f"reduction_left3_{block}", 3, 2, "avg"), h3),
               sep(p, filters, 5, 2, f"reduction_right3_{block}"))
        x4 = g(Add(g.auto("add")), x2, g(pool(f"reduction_left4_{block}", 3, 1, "avg", "same"), x1))
        x5 = g(Add(f"reduction_add4_{block}"), sep(x1, filters, 3, 1, f"reduction_left4_{block}"),
               g(pool(f"reduction_right5_{block}", 3, 2), h3))
        x = g(Concatenate(f"reduction_concat_{block}"), x2, x3, x4, x5)
        self.known[x] = (self.known[ip][0] + 1, 4 * filters)
        return x, ip


NASNETS = variants(NASNet)


@hookimpl
def tlc_backbones():
    return NASNETS
