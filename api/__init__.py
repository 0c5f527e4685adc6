"""The FastAPI scoring service (``create_app``)."""
