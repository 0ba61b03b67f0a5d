"""The Streamlit app: the catalog's faces for curators, annotators, analysts and auditors (`visionledger app`)."""
