"""Getting images, labels and corrections from the line into the catalog."""
