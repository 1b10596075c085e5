"""Unit tests of rewards/: reward terms and oracle backends."""
