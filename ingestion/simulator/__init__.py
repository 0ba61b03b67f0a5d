"""The pieces of the simulated factory: surface textures, defects, drift, the production plan and the writer."""
