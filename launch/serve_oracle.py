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


def make_server(model_dir: str, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    lock = threading.Lock()  # one generate at a time on the shared model

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                if not all(isinstance(p, str) for p in prompts):
                    raise ValueError("prompt must be text or a list of texts")
                max_tokens = min(int(body.get("max_tokens", 16)), MAX_TOKENS_CAP)
                if float(body.get("temperature", 0.0)) != 0.0:
                    raise ValueError("this server answers greedily only (temperature 0)")
            except (ValueError, KeyError, TypeError) as e:
                return self._reply(400, {"error": f"bad request: {e}"})
            with lock:
                texts = greedy_completions(model, tok, prompts, max_tokens)
            self._reply(200, {"object": "text_completion", "model": body.get("model", model_dir),
                              "choices": [{"index": i, "text": t, "finish_reason": "length"}
                                          for i, t in enumerate(texts)]})

        def _chat(self):
            """One conversation rendered with the model's chat template, answered greedily (what an LLM judge
            asks: ``envs.judges.LLMJudge``)."""
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                if not isinstance(messages, list) or not all(
                        isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
                    raise ValueError("messages must be a list of {role, content}")
                max_tokens = min(int(body.get("max_tokens", 16)), MAX_TOKENS_CAP)
                if float(body.get("temperature", 0.0)) != 0.0:
                    raise ValueError("this server answers greedily only (temperature 0)")
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except (ValueError, KeyError, TypeError) as e:
                return self._reply(400, {"error": f"bad request: {e}"})
            with lock:
                (answer,) = greedy_completions(model, tok, [text], max_tokens)
            self._reply(200, {"object": "chat.completion", "model": body.get("model", model_dir),
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                           "finish_reason": "length"}]})

    return ThreadingHTTPServer((host, port), Handler)
