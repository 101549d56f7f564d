"""The model catalogue is written once: `configs/serve/local.yaml`. Every other copy of the Serve config (the
integration tests', the chart's values, its CI values, the kustomize overlays) gets the same entries, with only
the per-target resource and batching settings from `configs/serve/targets.yaml`.

`python scripts/serve_configs.py [--check]` (run by `make chart-docs`; `--check` by the chart tests) rewrites the
`models:` block of each copy and leaves everything else in it (comments, ingress, jobs) as it is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "configs" / "serve" / "local.yaml"
TARGETS = ROOT / "configs" / "serve" / "targets.yaml"
PER_TARGET = ("deployment", "batching")  # what a copy may set differently; the rest is the model's identity


def catalogue() -> list[dict]:
    return yaml.safe_load(SOURCE.read_text())["applications"][0]["args"]["models"]


def _entry_text(entry: dict, indent: int) -> str:
    pad = " " * indent
    lines = [f"{pad}- name: {entry['name']}"]
    for key, value in entry.items():
        if key == "name":
            continue
        if isinstance(value, (dict, list)):
            dumped = yaml.safe_dump({key: value}, default_flow_style=None, width=120, sort_keys=False).rstrip("\n")
            lines += [f"{pad}  {line}" for line in dumped.split("\n")]
        else:
            lines.append(f"{pad}  {key}: {yaml.safe_dump(value, width=200).strip().removesuffix('...').strip()}")
    return "\n".join(lines)


def render(text: str, overrides: dict[str, dict]) -> str:
    """``text`` with its ``models:`` block replaced by the catalogue with ``overrides`` (by model name) applied."""
    match = re.search(r"^( +)models:\n", text, re.M)
    if match is None:
        raise ValueError("no `models:` block")
    indent, start = len(match.group(1)), match.end()
    end = re.search(rf"^ {{0,{indent}}}[A-Za-z_]", text[start:], re.M)
    end = start + end.start() if end else len(text)
    entries = []
    for model in catalogue():
        entry = {key: value for key, value in model.items() if key not in PER_TARGET}
        entry.update({key: value for key, value in model.items() if key in PER_TARGET})
        entry.update(overrides.get(model["name"], {}))
        entries.append(entry)
    block = "\n".join(_entry_text(entry, indent + 2) for entry in entries) + "\n"
    return text[:start] + block + text[end:]


def generated() -> dict[Path, str]:
    targets = yaml.safe_load(TARGETS.read_text())
    return {ROOT / path: render((ROOT / path).read_text(), overrides or {}) for path, overrides in targets.items()}


def main(argv: list[str]) -> int:
    stale = {path: text for path, text in generated().items() if path.read_text() != text}
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)}: its models differ from {SOURCE.relative_to(ROOT)} + "
                  f"{TARGETS.relative_to(ROOT)}: run `make chart-docs`.", file=sys.stderr)
        return 1 if stale else 0
    for path, text in stale.items():
        path.write_text(text)
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
