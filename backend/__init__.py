"""SynthArena backend: FastAPI app, domain services and the database models."""
