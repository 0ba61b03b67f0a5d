"""Reliability tests: the catalog under faults (processes killed mid-work, PostgreSQL restarted)."""
