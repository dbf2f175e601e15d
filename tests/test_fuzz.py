"""Property-based: random and mutated specs never crash tlc.

Whatever the bytes, `check` and `summarize` exit 0, 1 or 2 with valid JSON under --json, no
traceback and no internal error, quickly; what `check` accepts, `build` builds. CI runs a bounded number of examples; set TLC_FUZZ_EXAMPLES=5000 for a long run.
"""
from __future__ import annotations

import json
import os
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import EXAMPLES, tlc

EXAMPLES_N = int(os.environ.get("TLC_FUZZ_EXAMPLES", 60))
FUZZ = settings(max_examples=EXAMPLES_N, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SEEDS = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))
         if "extends" not in p.read_text()]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["vgg16", "conv_stack", "dense", "none", "all", "imagenet", "block4_pool", "max", "same"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _mutate(data, draw):
    """Delete, replace or insert at a random path of a valid spec."""
    if not isinstance(data, (dict, list)) or not data:
        return draw(values)
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = draw(st.sampled_from(keys))
    action = draw(st.sampled_from(["delete", "replace", "descend", "descend", "insert"]))
    data = dict(data) if isinstance(data, dict) else list(data)
    if action == "delete":
        del data[key]
    elif action == "replace":
        data[key] = draw(values)
    elif action == "insert" and isinstance(data, dict):
        data[draw(st.text(max_size=8))] = draw(values)
    else:
        data[key] = _mutate(data[key], draw)
    return data


@st.composite
def mutated_specs(draw):
    spec = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        spec = _mutate(spec, draw)
    return spec


def _assert_clean(result, started):
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    assert time.perf_counter() - started < 20


@FUZZ
@given(spec=mutated_specs(), command=st.sampled_from(["check", "summarize"]))
def test_mutated_specs_give_a_clean_answer(spec, command, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    started = time.perf_counter()
    result = tlc(command, path, "--json")
    _assert_clean(result, started)
    obj = json.loads(result.stdout)
    assert obj["ok"] is (result.exit_code == 0)
    if result.exit_code == 2:
        assert obj["error"]["layer"] is None and "fuzz.yaml" in obj["error"]["message"]


@FUZZ
@given(raw=st.binary(max_size=400), cut=st.integers(0, 2000), flip=st.integers(0, 255))
def test_damaged_bytes_give_a_clean_answer(raw, cut, flip, tmp_path):
    good = (EXAMPLES / "vgg16_partly_frozen.yaml").read_bytes()
    damaged = bytearray(good[: cut % (len(good) + 1)] + raw)
    if damaged:
        damaged[cut % len(damaged)] ^= flip
    path = tmp_path / "damaged.yaml"
    path.write_bytes(bytes(damaged))
    started = time.perf_counter()
    result = tlc("check", path, "--json")
    _assert_clean(result, started)
    json.loads(result.stdout)


@pytest.mark.parametrize("depth", [30, 200])
def test_deep_nesting_is_bounded(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text("input: " + "[" * depth + "]" * depth + "\n")
    result = tlc("check", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    if depth > 40:
        assert "nested deeper than 40 levels (raise the limit with TLC_MAX_YAML_DEPTH)" in result.output


@settings(max_examples=max(3, EXAMPLES_N // 20), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=mutated_specs())
@pytest.mark.slow
def test_mutated_specs_that_check_accepts_build(spec, tmp_path):
    """What check accepts, build builds, with the parameter count check reported."""
    path = tmp_path / "fuzz.yaml"
    text = yaml.safe_dump(spec).replace("imagenet", "null")
    path.write_text(text)
    checked = tlc("check", path, "--json")
    if checked.exit_code != 0 or "vgg16" in text and "224" in text:
        return  # only feasible, small specs are worth building here
    report = json.loads(checked.stdout)
    started = time.perf_counter()
    result = tlc("build", path, "-o", tmp_path / "m.keras")
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if any("file not found" in w for w in report["warnings"]):  # a weights path: check warns, build refuses
        assert result.exit_code == 2 and "file not found" in result.output, result.output
        return
    assert result.exit_code == 0, result.output
    assert f"{report['params']['total']:,} params" in result.output
    assert time.perf_counter() - started < 120
