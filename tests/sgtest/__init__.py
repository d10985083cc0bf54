"""Test helpers shared by every layer of the suite (importable because tests/ is on sys.path)."""
