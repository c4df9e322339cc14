"""openai backend against a real local HTTP server (127.0.0.1) that serves /v1/completions."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from o1code.models import SamplingParams, ServerError, load_generator


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append((self.path, body, self.headers.get("Authorization")))
        if srv.fail_first > 0:
            srv.fail_first -= 1
            return self._send(503, {"error": "overloaded"})
        if srv.sleep:
            time.sleep(srv.sleep)
        if body.get("model") == "bad":
            return self._send(400, {"error": "unknown model"})
        if srv.generator is not None:  # real sampling through the tiny hf generator
            p = SamplingParams(n=body["n"], temperature=body["temperature"], top_p=body["top_p"],
                               max_tokens=body["max_tokens"], stop=body.get("stop") or (), seed=body.get("seed"))
            comps = srv.generator.generate([body["prompt"]], p)[0]
            choices = [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                        "logprobs": {"tokens": [], "token_logprobs": c.logprobs}} for i, c in enumerate(comps)]
        else:  # canned; one choice only, like servers that ignore n
            choices = [{"index": 0, "text": "hello<END>tail", "finish_reason": "stop",
                        "logprobs": {"tokens": ["hello"], "token_logprobs": [-0.5]}}]
        self._send(200, {"id": "x", "object": "text_completion", "choices": choices})

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.requests, srv.fail_first, srv.sleep, srv.generator = [], 0, 0.0, None
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_canned_parse_and_n_loop(server):
    g = load_generator(f"openai:{_url(server)}#m", api_key="sk-test")
    outs = g.generate(["p1", "p2"], SamplingParams(n=2, stop=["<END>"], seed=3, top_k=5, max_tokens=7))
    assert [[c.text for c in o] for o in outs] == [["hello"] * 2] * 2
    c = outs[0][0]
    assert c.finish_reason == "stop" and c.logprobs == [-0.5] and c.token_ids == []
    path, body, auth = server.requests[0]
    assert path == "/v1/completions" and auth == "Bearer sk-test"
    assert body["model"] == "m" and body["stop"] == ["<END>"] and body["top_k"] == 5 and body["max_tokens"] == 7
    assert [r[1]["seed"] for r in server.requests[:2]] == [3, 4]  # server ignored n: asked again, next seed
    assert len(server.requests) == 4


def test_url_without_v1(server):
    g = load_generator(f"openai:http://127.0.0.1:{server.server_address[1]}#m")
    assert g.generate(["p"], SamplingParams())[0][0].text == "hello<END>tail"


def test_real_generation_through_tiny_model(server, tiny_model_dir):
    server.generator = load_generator(f"hf:{tiny_model_dir}", chat_template=False)
    g = load_generator(f"openai:{_url(server)}#tiny")
    p = SamplingParams(n=2, max_tokens=8, seed=11)
    a = g.generate(["def f(x):"], p)
    assert len(a[0]) == 2 and all(len(c.logprobs) >= 1 for c in a[0])
    assert a == g.generate(["def f(x):"], p)
    assert [c.text for c in a[0]] == [c.text for c in server.generator.generate(["def f(x):"], p)[0]]


def test_retries_on_503(server):
    server.fail_first = 2
    g = load_generator(f"openai:{_url(server)}#m", retries=2, backoff=0.01)
    assert g.generate(["p"], SamplingParams())[0][0].text == "hello<END>tail"
    assert len(server.requests) == 3


def test_gives_up_after_retries(server):
    server.fail_first = 10
    g = load_generator(f"openai:{_url(server)}#m", retries=1, backoff=0.01)
    with pytest.raises(ServerError, match="HTTP 503.*2 attempts"):
        g.generate(["p"], SamplingParams())


def test_client_error_not_retried(server):
    g = load_generator(f"openai:{_url(server)}#bad", retries=3, backoff=0.01)
    with pytest.raises(ServerError, match="HTTP 400.*unknown model"):
        g.generate(["p"], SamplingParams())
    assert len(server.requests) == 1


def test_timeout(server):
    server.sleep = 1.0
    g = load_generator(f"openai:{_url(server)}#m", timeout=0.2, retries=1, backoff=0.01)
    t = time.monotonic()
    with pytest.raises(ServerError, match="timed out"):
        g.generate(["p"], SamplingParams())
    assert time.monotonic() - t < 1.5


def test_unreachable_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    g = load_generator(f"openai:http://127.0.0.1:{port}/v1#m", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(ServerError, match=r"cannot reach .*is the server running"):
        g.generate(["p"], SamplingParams())
    with pytest.raises(ConnectionError):  # ServerError is also a ConnectionError
        g.generate(["p"], SamplingParams())
