"""The faces of the catalog: the `visionledger` command line, the Streamlit app, the trace report, and the demo's
loop (`demo_loop.py`)."""
