"""`tlc serve` under 16 concurrent clients vs the endpoints people write by hand: FastAPI calling
`model.predict` once per request, and the careful one, FastAPI calling a traced `tf.function` of
the model once per request (the fastest one-call-per-request code). Same model, same images,
same machine, one run. A third endpoint is the careful one with TensorFlow's intra-op threads set
to 1, the threading `tlc serve` uses (no target: it shows what that setting alone buys).

The model is a run trained here on generated shapes (a small conv_stack at 48x48, or
`--backbone mobilenet_v2`, alpha 0.35 at 160x160, weights null). The servers run at once on
their own ports as subprocesses; the load goes to one at a time, alternating rounds, so they see
the same machine. Each request carries one PNG. Reported: requests per second, p50 and p99
latency. Targets: tlc >= 2x `model.predict`'s throughput, >= 1.5x the traced function's, p99 no
worse than either.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _timing import BIN, REPO

sys.path.insert(0, str(REPO))
from tests.helpers import draw_shapes  # noqa: E402

SPECS = {
    "conv_stack": """
name: shapes
input: {shape: [48, 48, 3]}
backbone: {type: conv_stack, blocks: [{filters: 16, padding: same}, {filters: 32, padding: same},
                                      {filters: 64, padding: same, pool: null}]}
head: {type: dense, pooling: avg, classes: 3}
train: {data: {type: directory, path: photos, validation_split: 0.15}, epochs: 3, batch_size: 32}
""",
    "mobilenet_v2": """
name: shapes_mobilenet
input: {shape: [160, 160, 3]}
backbone: {type: mobilenet_v2, alpha: 0.35}
freeze: all
head: {type: dense, pooling: avg, classes: 3}
train: {data: {type: directory, path: photos, validation_split: 0.15}, epochs: 2, batch_size: 32}
""",
}

#: The hand-written endpoint: decode with PIL, the family's preprocessing, one model call per request
#: (CALL: `model.predict`, or a traced `tf.function` of the model).
HAND_WRITTEN = """
import io, sys
import numpy as np
import keras, uvicorn
import tensorflow as tf
from fastapi import FastAPI, UploadFile
from PIL import Image
from tlc import load_spec

run, port = sys.argv[1], int(sys.argv[2])
if sys.argv[3:] == ["one-thread"]:
    tf.config.threading.set_intra_op_parallelism_threads(1)
model = keras.saving.load_model(f"{run}/model.keras", compile=False)
spec = load_spec(f"{run}/spec.lock.yaml")
h, w, _ = spec.input.hwc
classes = ["circle", "square", "triangle"]
app = FastAPI()
traced = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

@app.post("/predict")
def predict(file: UploadFile):
    image = Image.open(io.BytesIO(file.file.read())).convert("RGB").resize((w, h), Image.BILINEAR)
    x = np.asarray(spec.backbone.preprocess(np.asarray(image, "float32")[None] / 255.0))
    p = CALL
    best = np.argsort(p)[::-1][:3]
    return {"predictions": [{"file": file.filename, "top": [{"class": classes[i], "probability": float(p[i])}
                                                           for i in best]}]}

@app.get("/health")
def health():
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""
TRACED = "traced(tf.constant(x)).numpy()[0]"
#: label -> (the model call, extra arguments); the first two have targets
CALLS = {"hand-written FastAPI + model.predict": ("model.predict(x, verbose=0)[0]", []),
         "hand-written FastAPI + traced tf.function": (TRACED, []),
         "  same, intra-op threads 1": (TRACED, ["one-thread"])}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}; see the server-*.log files")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url}: not healthy after {timeout} s")


def load(url: str, payloads: list[tuple[str, bytes]], requests: int, clients: int) -> tuple[float, float, float]:
    """(requests per second, p50 ms, p99 ms) for `requests` one-image requests from `clients` threads."""
    import httpx

    latencies: list[float] = []
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        def one(i: int) -> None:
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            response = client.post(f"{url}/predict", files=[("file", (name, data, "image/png"))])
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")

        for i in range(clients):  # warm-up: traced functions, connections
            one(i)
        latencies.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return requests / wall, cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(SPECS), default="conv_stack")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tlc-serve-bench-"))
    drawn = draw_shapes(folder / "photos", 60, (96, 96))
    (folder / "spec.yaml").write_text(SPECS[args.backbone].lstrip())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([str(BIN / "tlc"), "train", "spec.yaml", "--runs", "runs"], cwd=folder, check=True,
                   capture_output=True, env=env)
    run = next(p for p in (folder / "runs").iterdir() if not p.name.startswith("."))  # (.cache: the image store)
    payloads = [(Path(p).name, Path(p).read_bytes()) for p, _, _ in drawn[::9]]
    ports = {label: free_port() for label in ("tlc serve", *CALLS)}
    logs = {label: open(folder / f"server-{i}.log", "w") for i, label in enumerate(ports)}  # read when one fails
    processes = {"tlc serve": subprocess.Popen([str(BIN / "tlc"), "serve", str(run), "--port", str(ports["tlc serve"])],
                                               stderr=logs["tlc serve"], env=env)}
    for label, (call, extra) in CALLS.items():
        processes[label] = subprocess.Popen([sys.executable, "-c", HAND_WRITTEN.replace("CALL", call), str(run),
                                             str(ports[label]), *extra], stderr=logs[label], env=env)
    try:
        for label, process in processes.items():
            wait_healthy(f"http://127.0.0.1:{ports[label]}", process)
        results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in processes}
        for _ in range(args.rounds):
            for label in processes:
                results[label].append(load(f"http://127.0.0.1:{ports[label]}", payloads, args.requests, args.clients))
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(30)
    print(f"{args.backbone}: {args.clients} clients, {args.requests} one-image requests per round, "
          f"{args.rounds} rounds (best round shown)")
    best = {label: max(rounds) for label, rounds in results.items()}
    for label, (rps, p50, p99) in best.items():
        print(f"  {label:40s}{rps:8.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    tlc_rps, _, tlc_p99 = best["tlc serve"]
    for label, target in zip(CALLS, (2.0, 1.5)):
        rps, _, p99 = best[label]
        print(f"  vs {label}: throughput {tlc_rps / rps:.2f}x [target >= {target}x]; p99 {tlc_p99:.0f} vs "
              f"{p99:.0f} ms [target: no worse]")


if __name__ == "__main__":
    main()
