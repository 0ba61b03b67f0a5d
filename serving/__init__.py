"""The line's inspection: inference engines behind a thin HTTP API, part decisions by versioned rules, every
prediction and decision appended as an event (or spooled while the catalog is away), and replay of history."""
