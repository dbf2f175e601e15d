"""What `check` accepts for segmentation must build and train: a decoder on every built-in backbone
family that takes one (`weights: null`, at the smallest input check names, on tiny npz masks), and
check's refusal of every decoder on the families that take none. (Beside test_check_implies_train,
as a file of its own so that the suite's workers share the two.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import tlc
from .test_check_implies_train import BACKBONES

pytestmark = pytest.mark.slow

DECODED = [("conv_stack", "unet"), ("vgg16", "unet"), ("mobilenet_v2", "deeplab_v3_plus"), ("resnet50", "fpn"),
           ("densenet121", "unet"), ("efficientnet_b0", "fpn"), ("efficientnet_v2_b0", "unet"), ("mobilenet", "linknet"),
           ("mobilenet_v3_small", "deeplab_v3_plus"), ("convnext_tiny", "fpn"), ("nasnet_mobile", "deeplab_v3_plus")]
UNALIGNED = ("inception_v3", "xception")  # unpadded convolutions: no decoder's skips ever align


def test_every_backbone_family_is_decoded_or_refused_by_check(tmp_path):
    """Each family has a decoder here that trains (below), or check refuses every decoder on it."""
    assert sorted([kind for kind, _ in DECODED] + list(UNALIGNED)) == BACKBONES
    for kind in UNALIGNED:
        for decoder in ("unet", "fpn", "linknet", "deeplab_v3_plus"):
            spec = tmp_path / f"{kind}_{decoder}.yaml"
            spec.write_text(f"task: segmentation\ninput: {{shape: [224, 224, 3]}}\nbackbone: {{type: {kind}, "
                            f"weights: null}}\nhead: {{type: {decoder}, classes: 3}}\n")
            done = tlc("check", spec)
            assert done.exit_code == 1 and "no input near it aligns them" in " ".join(done.output.split()), \
                done.output


@pytest.mark.parametrize("kind, decoder", DECODED)
def test_a_decoder_check_accepts_builds_trains_and_segments(kind, decoder, tmp_path):
    """A decoder over every family's taps at the smallest input check names (test_decoders plans
    every decoder on more backbones against Keras): trained a step on npz masks (the frozen encoder
    runs whole: its taps cross the feature cache's boundary), its masks at the input's size."""
    import keras

    from tlc.train.loop import train

    backbone = f"{{type: {kind}, weights: null" + (", blocks: [{filters: 4, padding: same}, {filters: 8, padding: "
                                                   "same}]" if kind == "conv_stack" else "") + "}"
    probe = tmp_path / "probe.yaml"
    probe.write_text(f"task: segmentation\ninput: {{shape: [224, 224, 3]}}\nbackbone: {backbone}\n"
                     f"head: {{type: {decoder}, classes: 3}}\n")
    report = json.loads(tlc("check", probe, "--json").stdout)
    assert report["ok"], report
    side = max(report["min_input"])
    rng = np.random.default_rng(0)
    x = rng.random((6, side, side, 3), dtype=np.float32)
    y = rng.integers(0, 3, (6, side, side)).astype("uint8")
    y[:, 0, 0] = 255  # an ignored pixel
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(f"task: segmentation\ninput: {{shape: [{side}, {side}, 3]}}\nbackbone: {backbone}\nfreeze: all\n"
                    f"head: {{type: {decoder}, classes: 3}}\n"
                    "train: {data: {type: npz, path: tiny.npz, validation_split: 0.34}, epochs: 1, batch_size: 2, "
                    "class_weight: balanced}\n")
    checked = tlc("check", spec, "--json")
    assert checked.exit_code == 0, checked.output
    planned = json.loads(checked.stdout)
    assert planned["output_shape"] == [side, side, 3] and planned["taps"]
    result = train(spec, tmp_path / "runs")
    assert result.metrics["params"] == planned["params"] and np.isfinite(result.metrics["final"]["loss"])
    assert 0 <= result.metrics["final"]["val_miou"] <= 1
    assert sum(result.metrics["task"]["pixels"]) == int((y[:4] != 255).sum())  # (the 4 training masks')
    masks = np.asarray(result.model(x[:1], training=False))
    assert masks.shape == (1, side, side, 3)
    keras.backend.clear_session()
