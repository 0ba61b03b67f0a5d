"""Reports people take away from the catalog: the trace of a part as a self-contained HTML page or JSON."""
