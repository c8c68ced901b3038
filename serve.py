"""Draw a digit in the browser, or upload a photo of one, and see what a trained checkpoint reads.

    python serve.py model_mnist_<stamp>_acc<acc>.pth [--host 127.0.0.1] [--port 8000]

Loads the model once and serves page.html (a canvas, a file input, the ten probabilities and the
28x28 image the model saw) on http://HOST:PORT/. The page posts each drawing or file to /predict,
which runs predict.py's own preprocessing and inference:

    POST /predict   body: the image file's bytes (any format predict.py reads), at most 10 MB
    200 {"digit": d, "probabilities": [10 floats], "low_confidence": bool, "input": "<28x28 PNG, base64>"}
    POST /predict?number=1   every digit, left to right (predict.py --number):
    200 {"number": "90210", "digits": [{"digit": d, "probabilities": [10 floats], "box": [left, top, right,
         bottom] as shares of the image's width and height}, ...], "low_confidence": bool (any digit),
         "input": "<the digits the model saw side by side, 28 px tall, PNG, base64>"}
    400 / 411 / 413 / 404 {"error": "<one line>"}
    503 {"error": ...} with Retry-After, when DECODING images are already being read and none finishes
        within QUEUE_WAIT seconds: memory stays bounded whatever the number of uploads at once

Binds to 127.0.0.1 (this machine only) unless --host says otherwise, and answers only requests whose Host
header names it (localhost, 127.0.0.1, ::1 or --host, with its port): a page elsewhere cannot reach it
through DNS rebinding. Files on disk are never served by request path: the page is read once at start-up.
"""
import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()

import base64
import http.server
import json
import os
import socket
import sys
import threading
import urllib.parse

import plots
from checkpoint import load_checkpoint
from imageops import side_by_side
from inference import low_confidence, probabilities
from model import MODELS
from preprocess import found_digit, framed, read_image
from segmentation import images_of, number_read, probabilities_of, read_number

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")
MAX_BODY = 10 * 1024 * 1024   # bytes: a 12-megapixel phone JPEG is 3-6 MB
CLIENT_TIMEOUT = 10           # seconds a client may take to send its request before it is dropped
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Uploads read and decoded at once: a 12-megapixel PNG takes a few hundred MB while it is decoded, so
# this (not the number of clients) bounds memory; one per core keeps 2 cores busy, and a cap of 3 bounds
# it on larger machines (EXPERIMENTS.md, "serve.py under load").
DECODING = min(3, max(2, os.cpu_count() or 1))
QUEUE_WAIT = 10               # seconds an upload waits for a free slot before a 503
RETRY_AFTER = 2               # seconds the 503 asks the client to wait


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help="a model_mnist_*.pth (its .json sidecar beside it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but 127.0.0.1, localhost or ::1 makes the page "
                        "reachable from the network")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--model", metavar="NAME", help=f"variant, when the checkpoint has no sidecar: {', '.join(MODELS)}")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    cli.check_range("--port", args.port, 0, 65535)
    return args


class Classifier:
    """The model, loaded once, behind the same prepare -> probabilities path as predict.py. Requests run on
    threads of their own; the forward passes take turns, so 50 requests at once do not each start a
    full set of torch threads."""

    def __init__(self, model):
        self.model = model
        self.lock = threading.Lock()

    def probabilities(self, digits):
        with self.lock:
            return probabilities(self.model, digits)

    def __call__(self, data, number=False):
        """The answer for one image's bytes; a cli.UserError when it holds no digit."""
        name = "the uploaded image"
        reading = found_digit(read_image(data, name), name)
        if not number:
            digit = framed(reading)
            probs = self.probabilities(digit[None])[0]
            return {"digit": int(probs.argmax()), "probabilities": rounded(probs),
                    "low_confidence": low_confidence(probs),
                    "input": base64.b64encode(plots.digit_png(digit)).decode("ascii")}
        digits = read_number(reading, self.probabilities, name)
        probs = probabilities_of(digits)
        h, w = reading.ink.shape
        return {"number": number_read(probs),
                "digits": [{"digit": int(p.argmax()), "probabilities": rounded(p),
                            "box": [round(d.box[0] / w, 4), round(d.box[1] / h, 4), round((d.box[2] + 1) / w, 4),
                                    round((d.box[3] + 1) / h, 4)]} for d, p in zip(digits, probs, strict=True)],
                "low_confidence": any(low_confidence(p) for p in probs),
                "input": base64.b64encode(plots.digit_png(side_by_side(images_of(digits)))).decode("ascii")}


def rounded(probs):
    return [round(float(p), 6) for p in probs]


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mnist-serve"
    timeout = CLIENT_TIMEOUT  # socket timeout: a slow or vanished client frees its thread

    def do_GET(self):
        if not self.host_is_ours():
            return None
        if self.path.split("?")[0] in ("/", "/index.html"):
            self.send(200, self.server.page, "text/html; charset=utf-8")
        else:
            self.send_json(404, {"error": f"no page at {self.path[:200]}: open / or POST an image to /predict"})

    def host_is_ours(self):
        """Whether the Host header names this server; else a 400 is sent (DNS rebinding: a page from
        elsewhere, its name pointed at this machine, would send its own name)."""
        if (self.headers.get("Host") or "").strip().lower() in self.server.names:
            return True
        self.close_connection = True
        self.send_json(400, {"error": f"Host {(self.headers.get('Host') or '')[:100]!r} is not this server's name: "
                                      f"open {self.server.url}"})
        return False

    def do_POST(self):
        if not self.host_is_ours():
            return None
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path != "/predict":
            self.close_connection = True  # its body is left unread
            return self.send_json(404, {"error": f"nothing to POST at {self.path[:200]}: POST images to /predict"})
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            return self.send_json(411, {"error": "send the image as the request body, with a Content-Length"})
        length = int(length)
        if length > MAX_BODY:
            self.close_connection = True  # not read: the client may stop sending
            return self.send_json(413, {"error": f"the image is {length:,} bytes; the limit is {MAX_BODY:,} "
                                                 "(10 MB): send a smaller file"})
        if length == 0:
            return self.send_json(400, {"error": "the request body is empty: POST the image file's bytes"})
        # The body is read only once a slot is free: waiting uploads stay in the socket, not in memory.
        if not self.server.slots.acquire(timeout=self.server.queue_wait):
            self.close_connection = True  # its body is left unread
            return self.send_json(503, {"error": f"busy reading {DECODING} other images: try again in "
                                                 f"{RETRY_AFTER} s"}, {"Retry-After": str(RETRY_AFTER)})
        try:
            data = self.rfile.read(length)
            if len(data) < length:
                self.close_connection = True
                return self.send_json(400, {"error": "the upload was cut short: send the whole file"})
            answer = self.server.classify(data, number=query.get("number", ["0"])[-1] not in ("", "0"))
        except cli.OneLineError as e:
            return self.send_json(400, {"error": str(e)})
        finally:
            self.server.slots.release()
        self.send_json(200, answer)

    def send_error(self, code, message=None, explain=None):
        """What http.server answers on its own (a malformed request line, an unsupported method such as
        PUT or HEAD, headers too long), as one-line JSON too, like every other error here."""
        self.close_connection = True
        if self.command == "HEAD" or code < 200 or code in (204, 304):
            return super().send_error(code, message, explain)  # answers that carry no body
        reason = message or self.responses.get(code, ("error",))[0]
        self.send_json(code, {"error": f"{reason}: open / in a browser, or POST an image to /predict"})

    def send_json(self, status, payload, headers=None):
        self.send(status, json.dumps(payload).encode(), "application/json", headers)

    def send(self, status, body, content_type, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        """One line per request on stderr, without the client's address."""
        print(f"{self.log_date_time_string()} {format % args}", file=self.server.log, flush=True)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a hung client never keeps the process alive after Ctrl-C
    request_queue_size = 128  # socketserver's 5 would turn a burst of uploads away with connection resets
    allow_reuse_address = os.name != "nt"  # on Windows it would let two servers share a port

    def __init__(self, address, classify, page):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.classify, self.page = classify, page
        self.log = sys.stderr  # where request lines and failures go: the stderr of the moment it starts
        self.slots, self.queue_wait = threading.BoundedSemaphore(DECODING), QUEUE_WAIT
        super().__init__(address, Handler)
        bound, port = self.server_address[:2]
        hosts = {h.lower() for h in LOCAL_HOSTS | {address[0], bound}}
        self.names = {f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts}
        if port == 80:  # a browser leaves the default port out
            self.names |= {f"[{h}]" if ":" in h else h for h in hosts}
        self.url = f"http://[{bound}]:{port}/" if ":" in bound else f"http://{bound}:{port}/"

    def handle_error(self, request, client_address):
        """A request that failed in a way not answered above (the client hung up mid-reply): one line."""
        print(f"a request failed: {cli.OneLineError(str(sys.exc_info()[1]))}", file=self.log, flush=True)


def start(args):
    """The model loaded and the port bound; every start-up error is a one-line UserError."""
    model, sidecar = load_checkpoint(args.checkpoint, args.model)
    name = args.model or sidecar["model"]
    with open(PAGE, "rb") as f:
        page = f.read()
    try:
        return Server((args.host, args.port), Classifier(model), page), name
    except socket.gaierror:
        raise cli.UserError(f"--host {args.host!r} is not an address of this machine: try 127.0.0.1") from None
    except OSError as e:
        raise cli.UserError(f"cannot listen on {args.host} port {args.port} ({e.strerror}): "
                            "pass a free --port (0 picks one)") from None


def announce(server, name, args):
    """The line that says where the page is, and a warning when the network can reach it."""
    print(f"serving {name} from {args.checkpoint} at {server.url} (Ctrl-C stops it)", flush=True)
    if args.host not in LOCAL_HOSTS:
        print(f"warning: --host {args.host} makes the page reachable from the network, by anyone who can "
              "reach this machine", flush=True)


def main(argv=None):
    args = parse_args(argv)
    server, name = start(args)
    with server:
        # Announced inside the try: once a user (or a test) has read "serving", Ctrl-C is a clean stop.
        try:
            announce(server, name, args)
            server.serve_forever()
        except cli.Interrupted as e:  # Ctrl-C is how a server is meant to stop: not a failure
            print(f"stopped ({e})", file=sys.stderr)


if __name__ == "__main__":
    cli.run_cli(main)
