"""Tests of the MLA content layer (`protocol.mla`)."""
