"""serve.py: the API answered through predict.py's own path, every error JSON, a server that keeps serving;
and the page in a real browser (slow; needs Debian's chromium and Playwright from requirements-extras.txt)."""
import base64
import http.client
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image, ImageDraw

import predict
import serve
from inference import probabilities
from plots import gray_png
from preprocess import prepare

HERE = os.path.dirname(os.path.abspath(__file__))
# Strokes on a 280x280 pad, as a user draws them (points in pad pixels, one list per stroke).
DRAWN = {1: [[(140, 40), (140, 240)]],
         7: [[(70, 55), (210, 55), (120, 240)]],
         0: [[(140 + 60 * math.sin(t / 20 * 6.3), 140 - 95 * math.cos(t / 20 * 6.3))
              for t in range(21)]]}


@pytest.fixture(scope="module")
def httpd(trained):
    """serve.py's server on the session's model, on a free port, in this process: the same server a fresh
    process runs (start-up and Ctrl-C are tested in one below), without a second torch import."""
    server, _ = serve.start(serve.parse_args([trained.pth, "--port", "0"]))
    server.log = io.StringIO()  # its request lines would otherwise land in whichever test is capturing then
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def server(httpd):
    """(host, port) of that server."""
    return httpd.server_address[:2]


def head(server, more=b""):
    """A raw request's Host line, naming the server as a browser on this machine would."""
    return b"Host: %s:%d\r\n" % (server[0].encode(), server[1]) + more


def request(server, method, path, body=None, headers=None):
    """(status, parsed JSON or raw bytes, Content-Type) of one request."""
    conn = http.client.HTTPConnection(*server, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data, kind = response.read(), response.getheader("Content-Type")
        return response.status, json.loads(data) if kind == "application/json" else data, kind
    finally:
        conn.close()


def raw_reply(server, data):
    """Everything the server sends back for these raw bytes, up to its closing the connection (headers and
    body may come in separate packets)."""
    reply = b""
    with socket.create_connection(server, timeout=30) as s:
        s.sendall(data)
        while chunk := s.recv(4096):
            reply += chunk
    return reply


def photo_of(digit_uint8, size=300):
    """An MNIST digit as a user's file: dark ink on white, upscaled, JPEG."""
    img = Image.fromarray(255 - digit_uint8[0].numpy()).resize((size, size), Image.BICUBIC).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def drawing(digit, pen=20):
    """What the page posts for the strokes of DRAWN[digit]: a 280x280 PNG, black pen on white."""
    img = Image.new("RGB", (280, 280), "white")
    draw = ImageDraw.Draw(img)
    for stroke in DRAWN[digit]:
        draw.line(stroke, fill="black", width=pen, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_photo_is_answered_as_predict_would(server, trained, mnist_test):
    images, labels = mnist_test
    data = photo_of(images[0])
    status, answer, kind = request(server, "POST", "/predict", data)
    assert status == 200 and kind == "application/json"
    assert set(answer) == {"digit", "probabilities", "low_confidence", "input"}
    expected = probabilities(trained.model, prepare(data)[None])[0]
    assert answer["digit"] == int(labels[0]) == int(expected.argmax())
    assert torch.allclose(torch.tensor(answer["probabilities"]), expected, atol=1e-5)
    assert answer["low_confidence"] is (float(expected.max()) < 0.6)
    seen = Image.open(io.BytesIO(base64.b64decode(answer["input"])))
    assert seen.size == (28, 28) and seen.tobytes() == prepare(data)[0].numpy().tobytes()


@pytest.mark.parametrize("digit", sorted(DRAWN))
def test_a_drawing_is_read(server, digit):
    status, answer, _ = request(server, "POST", "/predict", drawing(digit))
    assert status == 200 and answer["digit"] == digit and not answer["low_confidence"]


def test_number_mode_answers_every_digit_with_its_box(server, trained, mnist_test):
    images, labels = mnist_test
    row = torch.cat([255 - images[i][0] for i in (0, 1, 2)], dim=1)  # 7, 2, 1 side by side, apart
    wide = torch.nn.functional.pad(row, (20, 20, 20, 20), value=255)
    status, body, _ = request(server, "POST", "/predict?number=1", gray_png(wide.numpy()))
    assert status == 200, body
    assert body["number"] == "721" and [d["digit"] for d in body["digits"]] == [7, 2, 1]
    lefts = [d["box"][0] for d in body["digits"]]
    assert lefts == sorted(lefts) and all(0 <= v <= 1 for d in body["digits"] for v in d["box"])
    for d, i in zip(body["digits"], (0, 1, 2), strict=True):  # each box holds its digit's third of the row
        assert i / 3 - 0.02 <= d["box"][0] < d["box"][2] <= (i + 1) / 3 + 0.02
        assert abs(sum(d["probabilities"]) - 1) < 1e-4
    assert body["low_confidence"] == any(max(d["probabilities"]) < 0.6 for d in body["digits"])
    seen = Image.open(io.BytesIO(base64.b64decode(body["input"])))
    assert seen.size == (84, 28)
    status, body, _ = request(server, "POST", "/predict?number=0", gray_png(wide.numpy()))
    assert status == 200 and "number" not in body and len(body["probabilities"]) == 10


@pytest.mark.parametrize("body, status, needle", [
    (b"hello, not an image", 400, "the uploaded image is not a readable image (UnidentifiedImageError): pass an image"),
    (gray_png(torch.full((64, 64), 255, dtype=torch.uint8).numpy()), 400, "no digit found"),
    (b"", 400, "the request body is empty"),
])
def test_bad_bodies_are_a_json_error(server, body, status, needle):
    got, answer, kind = request(server, "POST", "/predict", body)
    assert (got, kind, list(answer)) == (status, "application/json", ["error"])
    assert needle in answer["error"] and "\n" not in answer["error"]


def test_the_error_is_predicts_own_line(server, trained, tmp_path, in_process):
    notes = str(tmp_path / "notes.png")
    (tmp_path / "notes.png").write_bytes(b"hello, not an image")
    result = in_process(predict.main, [trained.pth, notes])
    _, answer, _ = request(server, "POST", "/predict", b"hello, not an image")
    assert result.stderr.strip() == "error: " + answer["error"].replace("the uploaded image", notes)


def test_a_body_over_10mb_is_refused_unread(server):
    conn = http.client.HTTPConnection(*server, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(11 * 1024 * 1024))
    conn.endheaders(b"\0" * 65536)  # the first 64 KB only: the answer must not wait for the other 11 MB
    response = conn.getresponse()
    assert response.status == 413 and "limit is 10,485,760" in json.loads(response.read())["error"]
    conn.close()


def test_a_body_without_length_is_refused(server):
    reply, body = raw_reply(server, b"POST /predict HTTP/1.1\r\n" + head(server, b"\r\n")).decode().split("\r\n\r\n", 1)
    assert reply.startswith("HTTP/1.0 411") and "Connection: close" in reply
    assert "Content-Length" in json.loads(body)["error"]


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/"), ("GET", "/serve.py"), ("GET", "/page.html"),
                                          ("GET", "/../README.md"), ("GET", "/%2e%2e/conftest.py")])
def test_other_paths_are_404_and_no_file_is_served(server, method, path):
    status, answer, kind = request(server, method, path, b"x" if method == "POST" else None)
    assert (status, kind) == (404, "application/json") and "error" in answer


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_a_json_error(server, method):
    status, answer, kind = request(server, method, "/predict", b"x")
    assert (status, kind) == (501, "application/json") and "POST an image to /predict" in answer["error"]


@pytest.mark.parametrize("request_line, needle", [(b"NONSENSE", "Bad request syntax"),
                                                   (b"GET / HTTP/9.9", "Invalid HTTP version")])
def test_a_malformed_request_is_a_json_error(server, request_line, needle):
    """http.server's own refusals are JSON too. (A request line it cannot parse gets the body alone, with
    no status line: http.server answers such a line as HTTP/0.9.)"""
    reply = raw_reply(server, request_line + b"\r\n\r\n")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[-1])["error"].startswith(needle)


def test_the_page_is_one_offline_file(server):
    status, page, kind = request(server, "GET", "/")
    assert status == 200 and kind == "text/html; charset=utf-8"
    with open(os.path.join(HERE, "page.html"), "rb") as f:
        assert page == f.read()
    text = page.decode()
    assert "<canvas" in text and 'type="file"' in text
    assert 'fetch(numberMode.checked ? "/predict?number=1" : "/predict"' in text
    assert "http://" not in text and "https://" not in text and "<link" not in text  # nothing fetched from elsewhere


@pytest.mark.slow  # a load test: fifty photos at once, each prepared twice
def test_fifty_at_once_then_one_more(server, trained, mnist_test):
    images, labels = mnist_test
    bodies = [photo_of(images[i], size=120) for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda body: request(server, "POST", "/predict", body), bodies))
    assert [status for status, _, _ in answers] == [200] * 50
    expected = probabilities(trained.model, torch.stack([prepare(b) for b in bodies])).argmax(1)
    assert [a["digit"] for _, a, _ in answers] == expected.tolist()
    assert (expected == labels[:50]).float().mean() >= 0.96
    status, answer, _ = request(server, "POST", "/predict", bodies[0])
    assert status == 200 and answer["digit"] == int(expected[0])


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil:{port}"])
def test_a_request_for_another_host_is_refused(server, host):
    """DNS rebinding: a page elsewhere whose name points at this machine sends its own Host. Only this
    server's names, with its port, are answered."""
    for method, path in (("GET", "/"), ("POST", "/predict")):
        status, answer, kind = request(server, method, path, b"x" if method == "POST" else None,
                                       {"Host": host.format(port=server[1])})
        assert (status, kind) == (400, "application/json") and "is not this server's name" in answer["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_the_servers_own_names_are_answered(server, host):
    status, _, _ = request(server, "GET", "/", headers={"Host": host.format(port=server[1])})
    assert status == 200


def test_uploads_beyond_the_decoding_slots_get_503_then_are_served(httpd, server, mnist_test, monkeypatch):
    """With every decoding slot taken, an upload waits its turn, then gets 503 with Retry-After and its body
    unread; once a slot frees, uploads are answered again."""
    monkeypatch.setattr(httpd, "queue_wait", 0.2)
    taken = [httpd.slots.acquire(timeout=30) for _ in range(serve.DECODING)]
    try:
        assert all(taken)
        conn = http.client.HTTPConnection(*server, timeout=30)
        conn.request("POST", "/predict", body=photo_of(mnist_test[0][0]))
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 503 and response.getheader("Retry-After") == str(serve.RETRY_AFTER)
        assert "try again" in answer["error"] and response.getheader("Connection") == "close"
    finally:
        for _ in taken:
            httpd.slots.release()
    status, answer, _ = request(server, "POST", "/predict", photo_of(mnist_test[0][0]))
    assert status == 200 and answer["digit"] == int(mnist_test[1][0])


def test_a_silent_client_does_not_block_others(server, mnist_test):
    with socket.create_connection(server, timeout=30) as idle:
        idle.sendall(b"POST /predict HTTP/1.1\r\n" + head(server, b"Content-Length: 1000\r\n\r\nonly a part"))
        status, _, _ = request(server, "POST", "/predict", photo_of(mnist_test[0][0]))
        assert status == 200


@pytest.mark.slow
def test_a_silent_client_is_dropped_after_the_timeout(server):
    with socket.create_connection(server, timeout=3 * serve.CLIENT_TIMEOUT) as idle:
        idle.sendall(b"POST /predict HTTP/1.1\r\n" + head(server, b"Content-Length: 1000\r\n\r\nonly a part"))
        start = time.monotonic()
        idle.recv(4096)  # returns when the server closes the connection
        assert time.monotonic() - start < 2 * serve.CLIENT_TIMEOUT


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
def test_a_hundred_large_uploads_at_once_keep_memory_bounded(trained, mnist_test):
    """100 uploads at once of a 12-megapixel PNG photo: each answered 200 or 503, the server's peak RSS at
    most 1.5 GB, and it serves normally afterwards."""
    from PIL import Image

    paper = Image.linear_gradient("L").resize((4000, 3000)).point(lambda v: 200 + v // 8)
    digit = Image.fromarray(255 - mnist_test[0][0][0].numpy()).resize((2400, 2400), Image.BILINEAR)
    paper.paste(digit, (800, 300), Image.fromarray(mnist_test[0][0][0].numpy()).resize((2400, 2400)))
    buf = io.BytesIO()
    paper.convert("RGB").save(buf, "PNG")
    body = buf.getvalue()
    assert len(body) <= serve.MAX_BODY
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), trained.pth, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        at = (host, int(port))
        with ThreadPoolExecutor(100) as pool:
            statuses = [s for s, _, _ in pool.map(lambda _: request(at, "POST", "/predict", body), range(100))]
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:
            peak_kb = int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
        print(f"{statuses.count(200)} answered 200, {statuses.count(503)} 503; peak RSS {peak_kb / 1024:.0f} MB")
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 1
        assert peak_kb <= 1.5 * 1024 * 1024
        status, answer, _ = request(at, "POST", "/predict", photo_of(mnist_test[0][0]))
        assert status == 200 and answer["digit"] == int(mnist_test[1][0])
    finally:
        proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)
        proc.communicate(timeout=60)


# ---------------------------------------------------------------- start-up and stop

def test_bad_checkpoint_is_one_line_before_serving(tmp_path, in_process, one_line_error):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    one_line_error(in_process(serve.main, [tmp_path / "bad.pth", "--model", "fastnet"]),
                   "not a readable PyTorch checkpoint")


def test_port_in_use_is_one_line(trained, in_process, one_line_error):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(in_process(serve.main, [trained.pth, "--port", port]), f"cannot listen on 127.0.0.1 port {port}")


@pytest.mark.parametrize("flags, needle", [(["--port", "70000"], "--port"),
                                           (["--host", "no.such.host.invalid"], "--host")])
def test_bad_address_is_one_line(trained, in_process, one_line_error, flags, needle):
    one_line_error(in_process(serve.main, [trained.pth, *flags]), needle)


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_binds_localhost_and_warns_for_the_network(trained, capsys, host, local):
    flags = ["--port", "0"] + ([] if host == "127.0.0.1" else ["--host", host])  # the default is 127.0.0.1
    args = serve.parse_args([trained.pth, *flags])
    httpd, name = serve.start(args)
    with httpd:
        assert httpd.server_address[0] == host
        serve.announce(httpd, name, args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"serving {trained.sidecar['model']} from {trained.pth} at http://{host}:")
    assert lines[1:] == ([] if local else [f"warning: --host {host} makes the page reachable from the network, "
                                           "by anyone who can reach this machine"])


@pytest.mark.slow  # a fresh interpreter: torch's import alone is most of its time
@pytest.mark.skipif(os.name == "nt", reason="Windows has no SIGINT to send to a child")
def test_ctrl_c_stops_with_one_line(trained):
    """A fresh process: it starts, says where it serves (127.0.0.1 unless told otherwise), and Ctrl-C sent
    as soon as that line is out stops it cleanly (the line is printed where Ctrl-C is already a stop)."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), trained.pth, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    assert line.startswith("serving ") and "http://127.0.0.1:" in line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err.strip().splitlines()[-1] == "stopped (SIGINT)"
    assert "Traceback" not in err


# ---------------------------------------------------------------- the page in a real browser

def chromium():
    """Debian's chromium (Playwright's own browser download cannot work here), or a skip saying what to install."""
    pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-extras.txt (Playwright)")
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not path:
        pytest.skip("no chromium installed: apt-get install chromium (CI's .ci/run does)")
    return path


def draw(page, strokes, width=280):
    """Each stroke with the mouse, point by point, as a hand would, on the pad's own coordinates (`width`
    pixels wide: 280, or 700 in number mode)."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / width
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()


@pytest.mark.slow
def test_the_page_in_a_real_browser(server, mnist_test, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    url = f"http://{server[0]}:{server[1]}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 620})
        page.goto(url)
        for digit in (1, 7, 0):
            page.click("#clear")
            expect(page.locator("#answer")).to_have_text("")
            draw(page, DRAWN[digit])
            expect(page.locator("#answer")).to_have_text(str(digit), timeout=15_000)
            assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
            probs = [float(t.rstrip("%")) for t in page.locator(".bars > span:nth-child(3n)").all_inner_texts()]
            assert len(probs) == 10 and max(probs) == probs[digit] and abs(sum(probs) - 100) < 1
        page.screenshot(path=str(tmp_path / "page_drawn_0.png"))

        images, labels = mnist_test
        upload = tmp_path / "mnist_test_digit.png"
        upload.write_bytes(gray_png(255 - images[3][0].numpy()))
        page.set_input_files("#file", str(upload))
        expect(page.locator("#answer")).to_have_text(str(int(labels[3])), timeout=15_000)

        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        page.set_input_files("#file", str(notes))
        expect(page.locator("#error")).to_contain_text("is not a readable image", timeout=15_000)
        expect(page.locator("#answer")).to_have_text("")

        page.click("#clear")
        draw(page, DRAWN[7])  # the page still works after an error
        expect(page.locator("#answer")).to_have_text("7", timeout=15_000)
        expect(page.locator("#error")).to_have_text("")
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    print(f"screenshots in {tmp_path}")


@pytest.mark.slow
def test_number_mode_in_a_real_browser(server, tmp_path):
    """A three-digit number drawn stroke by stroke on the wide pad, read as the number with a bar per digit."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    strokes = ([[(x + 160 * k, y) for x, y in stroke] for stroke in DRAWN[d]] for k, d in enumerate((1, 7, 0)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.goto(f"http://{server[0]}:{server[1]}/")
        page.check("#number")
        assert page.locator("#pad").evaluate("pad => pad.width") == 700
        for stroke in strokes:  # 1, then 7, then 0, 160 pad pixels apart
            draw(page, stroke, width=700)
        expect(page.locator("#answer")).to_have_text("170", timeout=15_000)
        expect(page.locator("#bars")).to_be_hidden()  # one bar per digit instead of the ten
        cells = page.locator("#digits > div")
        expect(cells).to_have_count(3)
        assert [cells.nth(i).locator("b").inner_text() for i in range(3)] == ["1", "7", "0"]
        assert all(0 < float(t.rstrip("%")) <= 100 for t in page.locator("#digits span").all_inner_texts())
        assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
        page.screenshot(path=str(tmp_path / "page_number.png"))
        page.uncheck("#number")  # back to one digit: the narrow pad and the ten bars
        assert page.locator("#pad").evaluate("pad => pad.width") == 280
        draw(page, DRAWN[7])
        expect(page.locator("#answer")).to_have_text("7", timeout=15_000)
        expect(page.locator("#bars")).to_be_visible()
        browser.close()
