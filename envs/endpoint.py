"""One client for the OpenAI-compatible endpoints the tool talks to (an LLM judge, a shared oracle server):
``vllm serve``, ``backdoor-aware serve-oracle`` or a hosted API, on the ``openai`` client.

The key is read from an environment variable (``OPENAI_API_KEY`` unless the config names another), never from
the command line or the saved config, where it would leak into process lists and run directories. The client
retries connection errors, timeouts, 408/409/429 and 5xx with exponential backoff; any other 4xx (a wrong key,
an unknown model, a malformed request) fails at once, since asking again cannot change the answer.
"""
from __future__ import annotations

import os

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class EndpointError(RuntimeError):
    """The endpoint could not answer; one line that says which and why."""


def client(url: str, key_env: str = DEFAULT_KEY_ENV, timeout: float = 60.0, retries: int = 3):
    from openai import OpenAI
    # a local server started without --api-key accepts any key; the client needs one to be set
    return OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=os.environ.get(key_env) or "none", timeout=timeout,
                  max_retries=retries)


def describe(error: Exception, url: str, tries: int) -> str:
    """An openai exception as one line: the status and the server's own message, or the transport failure."""
    import openai
    if isinstance(error, openai.APIStatusError):
        detail = " ".join(str(getattr(error, "message", "") or error).split())[:200]
        hint = " (wrong or missing API key? set it in the environment)" if error.status_code in (401, 403) else ""
        again = f" after {tries} tries" if error.status_code >= 500 or error.status_code in (408, 409, 429) else ""
        return f"{url} answered HTTP {error.status_code}{again}: {detail}{hint}"
    return f"{url} failed after {tries} tries: {' '.join(str(error).split())[:200] or type(error).__name__}"
