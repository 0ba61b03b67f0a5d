"""The faces of the catalog: the `visionledger` command line and, later, the Streamlit app."""
