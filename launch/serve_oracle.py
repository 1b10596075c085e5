"""``backdoor-aware serve-oracle``: the HF oracle model behind an OpenAI-compatible completions API (and a
greedy ``/v1/chat/completions`` for one conversation, what an LLM judge asks).

For where vLLM cannot run (CPU, tests) and as the reference server: the same request/response shape
as ``vllm serve``'s ``/v1/completions`` (a list of prompts in, ``choices[i].text`` out), greedy only.
Binds to loopback by default.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from envs.chat import greedy_completions
from envs.loading import load_model
from envs.tokenizer import load_tokenizer

MAX_TOKENS_CAP = 256
MAX_BODY_BYTES = 16 * 2**20  # a step's batch of prompts is well under this (an 8B preset step: ~3 MB)
MAX_PROMPTS = 16384
MAX_PROMPT_CHARS = 16384
READ_TIMEOUT_S = 30.0  # a client that announces a body and never sends it frees its thread after this


class BadRequest(ValueError):
    """A request refused with its HTTP status (400, 411, 413)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _max_tokens(body: dict) -> int:
    value = body.get("max_tokens", 16)
    if type(value) is not int or not 1 <= value <= MAX_TOKENS_CAP:
        raise BadRequest(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS_CAP}, got {str(value)[:20]}")
    return value


def _check_texts(texts: list) -> None:
    if not texts or len(texts) > MAX_PROMPTS:
        raise BadRequest(413 if texts else 400, f"1 to {MAX_PROMPTS} prompts per request, got {len(texts)}")
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest(400, "prompt must be text or a list of texts")
    if any(len(t) > MAX_PROMPT_CHARS for t in texts):
        raise BadRequest(413, f"a prompt is longer than {MAX_PROMPT_CHARS} characters")


def make_server(model_dir: str, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    lock = threading.Lock()  # one generate at a time on the shared model

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> dict:
            """The JSON body, read only when its announced length is sane (nothing is read of an oversized one)."""
            length = self.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise BadRequest(411, "a Content-Length of 0 or more bytes is required")
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
            try:
                body = json.loads(self.rfile.read(int(length)), parse_constant=lambda c: None)
            except (ValueError, RecursionError):
                raise BadRequest(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise BadRequest(400, "the body must be a JSON object")
            if float(body.get("temperature", 0.0) or 0.0) != 0.0:
                raise BadRequest(400, "this server answers greedily only (temperature 0)")
            return body

        def _reply(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client left first: nothing to tell it
                self.close_connection = True

        def do_GET(self):
            if self.path == "/v1/models":
                return self._reply(200, {"data": [{"id": model_dir, "object": "model"}]})
            self._reply(404, {"error": "not found"})

        def do_POST(self):
            if self.path == "/v1/chat/completions":
                return self._chat()
            if self.path != "/v1/completions":
                return self._reply(404, {"error": "not found"})
            try:
                body = self._body()
                prompts = body.get("prompt")
                prompts = prompts if isinstance(prompts, list) else [prompts]
                _check_texts(prompts)
                max_tokens = _max_tokens(body)
            except BadRequest as e:
                return self._reply(e.status, {"error": f"bad request: {e}"})
            except (ValueError, TypeError, OverflowError) as e:
                return self._reply(400, {"error": f"bad request: {str(e)[:200]}"})
            with lock:
                texts = greedy_completions(model, tok, prompts, max_tokens)
            self._reply(200, {"object": "text_completion", "model": body.get("model", model_dir),
                              "choices": [{"index": i, "text": t, "finish_reason": "length"}
                                          for i, t in enumerate(texts)]})

        def _chat(self):
            """One conversation rendered with the model's chat template, answered greedily (what an LLM judge
            asks: ``envs.judges.LLMJudge``)."""
            try:
                body = self._body()
                messages = body.get("messages")
                if not isinstance(messages, list) or not all(
                        isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
                    raise BadRequest(400, "messages must be a list of {role, content}")
                _check_texts([m["content"] for m in messages])
                max_tokens = _max_tokens(body)
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except BadRequest as e:
                return self._reply(e.status, {"error": f"bad request: {e}"})
            except (ValueError, TypeError, OverflowError, KeyError) as e:
                return self._reply(400, {"error": f"bad request: {str(e)[:200]}"})
            with lock:
                (answer,) = greedy_completions(model, tok, [text], max_tokens)
            self._reply(200, {"object": "chat.completion", "model": body.get("model", model_dir),
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                           "finish_reason": "length"}]})

    return _Server((host, port), Handler)


class _Server(ThreadingHTTPServer):
    """A listen queue for a step's worth of clients at once: the standard library's 5 overflowed under 50
    simultaneous requests and the kernel reset the ones it could not queue."""

    request_queue_size = 256
    daemon_threads = True
