"""`tlc serve`: the real server in a subprocess on a free local port, spoken to over HTTP with
httpx: answers equal to `tlc predict`'s, batching under load, bad input as 4xx while the server
keeps serving, limits, the API key, and a clean stop on SIGTERM."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import tlc
from .helpers import files_of, predicted, serving, tlc_executable

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")


def same(answer: list[dict], expected: list) -> bool:
    return [t["class"] for t in answer] == [c for c, _ in expected] and \
        all(abs(t["probability"] - p) <= 1e-5 for t, (_, p) in zip(answer, expected))


def test_predict_health_and_metadata_answer_as_tlc_predict(shapes_run):
    from tlc.build.weights import file_sha256

    run, drawn = shapes_run
    files = files_of(drawn, 6)
    expected = predicted(run, files)
    with serving(run) as (url, _, lines):
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        multipart = [("file", (f.name, f.read_bytes(), "image/png")) for f in files[:4]]
        answer = httpx.post(f"{url}/predict", files=multipart, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [p["file"] for p in body["predictions"]] == [f.name for f in files[:4]]
        assert all(same(p["top"], expected[p["file"]]) for p in body["predictions"])
        assert body["model"] == {"name": "shapes", "sha256": file_sha256(str(run / "model.keras"))}
        raw = httpx.post(f"{url}/predict?top=1", content=files[5].read_bytes(), headers={"Content-Type": "image/png"})
        assert raw.status_code == 200 and same(raw.json()["predictions"][0]["top"], expected[files[5].name][:1])
        meta = httpx.get(f"{url}/metadata").json()
        assert meta["classes"] == ["circle", "square", "triangle"] and meta["input_shape"] == [48, 48, 3]
        assert meta["spec"]["backbone"]["type"] == "conv_stack" and meta["served"]["images"] == 5
        assert meta["served"]["max_bytes"] == 20_000_000 and meta["served"]["max_images"] == 64
        check_explain(url, run, files)
        check_flip(url, run, files)
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<script>" in page.text and not re.search(r"""(src|href|url)\(?=?["']?(https?:)?//""", page.text)
    assert any(line.startswith("stopped: 9 images classified in") for line in lines)  # 5, and 2 with their flips


def check_flip(url, run, files):
    """`?tta=flip` on /predict and /explain answers `tlc predict --tta flip`'s probabilities."""
    result = tlc("predict", run, *files[:2], "--json", "--top", "3", "--tta", "flip")
    assert result.exit_code == 0, result.output
    expected = {Path(r["image"]).name: [(t["class"], t["probability"]) for t in r["top"]] for r in json.loads(result.stdout)}
    assert expected != predicted(run, files[:2])  # the flip changes the numbers
    multipart = [("file", (f.name, f.read_bytes(), "image/png")) for f in files[:2]]
    answer = httpx.post(f"{url}/predict?tta=flip", files=multipart, timeout=30).json()
    assert all(same(p["top"], expected[p["file"]]) for p in answer["predictions"])
    heat = httpx.post(f"{url}/explain?tta=flip&overlay=1", files=multipart[:1], timeout=60)
    best_class, best = expected[files[0].name][0]
    assert heat.headers["x-tlc-class"] == best_class and abs(float(heat.headers["x-tlc-probability"]) - best) < 1e-4
    explained = tlc("explain", run, files[0], "--tta", "flip", "-o", run.parent / "flipped", "--json")
    assert abs(json.loads(explained.stdout)[0]["probability"] - best) < 1e-4
    bad = httpx.post(f"{url}/predict?tta=rotate", files=multipart[:1], timeout=30)
    assert bad.status_code == 400 and "tta: expected flip (or none), got 'rotate'" in bad.json()["error"]


def check_explain(url, run, files):
    """POST /explain: `tlc explain`'s class, probability and layer in headers, its picture or the
    heat map alone; bad input as 4xx."""
    import io

    from PIL import Image

    explained = tlc("explain", run, files[0], "--class", "square", "-o", run.parent / "explained", "--json")
    (reference,) = json.loads(explained.stdout)
    png = files[0].read_bytes()
    picture = httpx.post(f"{url}/explain", files=[("file", (files[0].name, png, "image/png"))], timeout=60)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png", picture.text
    best_class, best = predicted(run, files[:1])[files[0].name][0]
    assert picture.headers["x-tlc-class"] == best_class and picture.headers["x-tlc-layer"] == "block3_conv1"
    assert abs(float(picture.headers["x-tlc-probability"]) - best) < 1e-4
    with Image.open(io.BytesIO(picture.content)) as drawn:
        assert drawn.size[0] > 300  # the captioned figure `tlc explain` writes
    overlay = httpx.post(f"{url}/explain?overlay=1&class=square", content=png, headers={"Content-Type": "image/png"},
                         timeout=60)
    assert overlay.status_code == 200 and overlay.headers["x-tlc-class"] == "square"
    assert overlay.headers["x-tlc-placement"] == "0,0,1,1"  # the shapes run stretches: the whole photo
    assert abs(float(overlay.headers["x-tlc-probability"]) - reference["probability"]) < 1e-4
    with Image.open(io.BytesIO(overlay.content)) as heat:
        assert heat.size == (48, 48) and heat.mode == "RGBA"
    for kwargs, message in (
            (dict(params={"class": "hexagon"}, content=png, headers={"Content-Type": "image/png"}),
             "class hexagon: the run's classes are circle, square, triangle"),
            (dict(files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]),
             "/explain takes one image; got 2"),
            (dict(files=[("file", ("notes.txt", b"hello", "text/plain"))]), "notes.txt: not a readable image")):
        bad = httpx.post(f"{url}/explain", timeout=30, **kwargs)
        assert bad.status_code == 400 and message in bad.json()["error"], bad.text


def test_bad_input_is_a_4xx_naming_the_part_and_the_server_keeps_serving(shapes_run):
    run, drawn = shapes_run
    good = files_of(drawn, 3)
    png = good[0].read_bytes()
    with serving(run, "--max-images", "2", "--max-bytes", "30000") as (url, process, _):
        mixed = httpx.post(f"{url}/predict", timeout=30, files=[("file", ("a.png", png, "image/png")),
                                                                 ("file", ("notes.txt", b"hello", "text/plain"))])
        assert mixed.status_code == 200, mixed.text  # every part answered: the image, and why the other is not one
        first, second = mixed.json()["predictions"]
        assert first["file"] == "a.png" and len(first["top"]) == 3
        assert second == {"file": "notes.txt", "error": "notes.txt: not a readable image (not an image format Pillow reads)"}
        cases = [
            (dict(files=[("file", ("notes.txt", b"hello", "text/plain"))]), 400,
             "notes.txt: not a readable image (not an image format Pillow reads)"),
            (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "body: empty"),
            (dict(files=[("file", (f"{i}.png", png, "image/png")) for i in range(3)]), 413,
             "3 images; the limit is 2 per request (--max-images)"),
            (dict(content=b"x" * 40000, headers={"Content-Type": "image/jpeg"}), 413, "the limit is 30,000 (--max-bytes)"),
            (dict(data={"file": "just text"}), 415, "send images as multipart/form-data"),
            (dict(files=[("other", ("a.png", png, "image/png"))]), 400, "the form has no 'file' field"),
        ]
        for kwargs, status, message in cases:
            response = httpx.post(f"{url}/predict", timeout=30, **kwargs)
            assert response.status_code == status and message in response.json()["error"], response.text
        assert httpx.post(f"{url}/predict?top=0", content=png, headers={"Content-Type": "image/png"}).status_code == 400
        assert httpx.get(f"{url}/nowhere").json() == {"error": "Not Found"}
        ok = httpx.post(f"{url}/predict", files=[("file", ("a.png", png, "image/png"))], timeout=30)
        assert ok.status_code == 200 and process.poll() is None


def test_an_api_key_guards_everything_but_health_and_the_page(shapes_run):
    run, drawn = shapes_run
    png = files_of(drawn, 1)[0].read_bytes()
    with serving(run, "--api-key-env", "TLC_TEST_KEY", env={"TLC_TEST_KEY": "s3cret"}) as (url, _, _):
        post = lambda headers: httpx.post(f"{url}/predict", content=png,  # noqa: E731
                                          headers={"Content-Type": "image/png", **headers}, timeout=30)
        assert post({}).status_code == 401 and "API key" in post({}).json()["error"]
        assert post({"Authorization": "Bearer wrong"}).status_code == 401
        assert post({"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/metadata").status_code == 401 and httpx.get(f"{url}/health").status_code == 200
        assert httpx.post(f"{url}/explain", content=png, headers={"Content-Type": "image/png"}).status_code == 401
        assert httpx.get(f"{url}/").status_code == 200  # the page holds nothing; it asks for the key
    missing = tlc("serve", run, "--api-key-env", "TLC_NOT_SET_ANYWHERE")
    assert missing.exit_code == 2 and "TLC_NOT_SET_ANYWHERE: that environment variable is not set" in missing.output


def test_sixteen_concurrent_clients_get_four_hundred_right_answers_in_batches(shapes_run):
    run, drawn = shapes_run
    files = files_of(drawn, 20)
    expected = predicted(run, files)
    payloads = [(f.name, f.read_bytes()) for f in files]
    with serving(run) as (url, _, _):
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
            def one(i):
                name, data = payloads[i % len(payloads)]
                response = client.post(f"{url}/predict", files=[("file", (name, data, "image/png"))])
                return name, response.status_code, response.json()

            answers = list(pool.map(one, range(400)))
            served = client.get(f"{url}/metadata").json()["served"]
    assert all(status == 200 for _, status, _ in answers)
    assert all(same(body["predictions"][0]["top"], expected[name]) for name, _, body in answers)
    assert served["images"] == 400 and served["model_calls"] < 400 / 2  # batched: several requests per call


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(shapes_run):
    run, drawn = shapes_run
    png = files_of(drawn, 1)[0].read_bytes()
    with serving(run, "--max-batch", "1") as (url, process, _):
        result = {}

        def slow():  # 64 images, one model call each
            result["response"] = httpx.post(f"{url}/predict", timeout=60,
                                            files=[("file", (f"{i}.png", png, "image/png")) for i in range(64)])

        thread = threading.Thread(target=slow)
        thread.start()
        import time

        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        thread.join(60)
    assert result["response"].status_code == 200 and len(result["response"].json()["predictions"]) == 64


def test_a_taken_port_is_a_clear_error(shapes_run):
    import socket

    run, _ = shapes_run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([tlc_executable(), "serve", str(run), "--port", str(port)], capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_answers_leave_at_once_the_listening_socket_is_tcp_so_nagle_is_off():
    """asyncio turns Nagle's algorithm off only on accepted sockets whose protocol says TCP; with
    it on, every answer waited for the client's delayed ACK (MobileNetV2 168 -> 224 req/s)."""
    import asyncio
    import socket

    from tlc.serve.server import listen

    async def accepted_nodelay() -> int:
        sock = listen("127.0.0.1", 0)
        seen = asyncio.get_running_loop().create_future()

        def connected(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
