"""The inference service: a server process that owns models, volumes and embeddings
(:mod:`.server`, FastAPI + uvicorn) and the client front ends use (:mod:`.client`, standard
library + numpy only), sharing one wire format (:mod:`.protocol`)."""
