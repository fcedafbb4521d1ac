"""Builders shared by the tests: in-memory networks, running stacks, byte surgery."""
