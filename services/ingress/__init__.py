"""Ingress layer: the FastAPI app, its REST routers and Gradio UIs. Talks to models only through ``backends``."""
