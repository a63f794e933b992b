"""Integration tests use the `local_cluster` and `emulators` fixtures of tests/conftest.py."""
