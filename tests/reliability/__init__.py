"""Reliability tests: the catalog under bad input and under faults (processes killed mid-work, PostgreSQL
restarted), each followed by a consistency check."""
