"""Getting images, labels, corrections and ontology versions from the line into the catalog; the simulated
factory that stands in for a line."""
