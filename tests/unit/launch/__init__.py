"""Unit tests of launch/ and of the house itself (layering, shipped files)."""
