"""raydio: PyTorch models on Ray Serve behind one FastAPI ingress with REST and Gradio UIs."""
