"""Unit tests, one folder per package: small and fast, tiny models at most."""
