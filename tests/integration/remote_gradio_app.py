"""A small, real Gradio app that the integration tests use as a remote backend: `python remote_gradio_app.py PORT`."""

import sys

import gradio as gr
from PIL import Image


def shout(text: str) -> str:
    return text.upper()


def measure(path: str) -> str:
    with Image.open(path) as image:
        return f"{image.width}x{image.height}"


with gr.Blocks() as demo:
    text_in, text_out = gr.Textbox(), gr.Textbox()
    image_in, size_out = gr.Image(type="filepath"), gr.Textbox()
    gr.Button("shout").click(shout, text_in, text_out, api_name="shout")
    gr.Button("measure").click(measure, image_in, size_out, api_name="measure")

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), show_error=True)
