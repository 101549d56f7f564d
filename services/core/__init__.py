"""The application core: what every face (REST, Gradio, MCP, the job runner) shares.

``catalogue`` knows which models exist and what each kind offers; ``client`` calls their deployments (timeouts,
error translation, spans, metrics); ``models``, ``chat``, ``sessions`` and ``jobs`` are the services the faces call.
Limits and validation live here once. No FastAPI, Gradio or torch imports.
"""
