"""Regenerate the configuration tables between the README markers from services.config."""

from pathlib import Path

from services.config import config_reference_markdown

START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
readme = Path(__file__).resolve().parents[1] / "README.md"
head, rest = readme.read_text().split(START)
_, tail = rest.split(END)
readme.write_text(head + START + config_reference_markdown() + END + tail)
