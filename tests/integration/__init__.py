"""Integration tests: the CLI end to end, slow training runs, vLLM engines, servers, processes."""
