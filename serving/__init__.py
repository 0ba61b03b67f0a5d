"""The line's inspection: inference engines behind a thin HTTP API, part decisions by versioned rules, every
prediction and decision appended as an event (or spooled while the catalog is away), and replay of history."""

# Requests per client address the server answers, in the `limits` notation (`visionledger serve --rate-limit`):
# room for several stations at 20 frames/s behind one address. Here, not in `service`, so that the command line
# shows it without loading the engines.
DEFAULT_RATE_LIMIT = "100/second"
