"""Model layer: torch code only. No Ray, FastAPI or Gradio imports here.

Each model class knows how to ``load()`` itself onto a device and how to run a batch.
"""
