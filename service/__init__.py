"""The facial emotion service: FastAPI over the model store."""
