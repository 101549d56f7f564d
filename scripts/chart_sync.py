"""Keep the Helm chart's generated parts in step with the code: `python scripts/chart_sync.py [--check]`.

- values.schema.json `$defs` for `args` of `services.app:build_app`, from `services.config.RaydioAppArgs`
  (so the chart rejects exactly what the app builder rejects, before anything reaches a cluster);
- the values table in deploy/helm/raydio/README.md, from the `# --` comments in values.yaml.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a plain script, without PYTHONPATH
CHART = ROOT / "deploy" / "helm" / "raydio"
APP_ARGS_PREFIX = "RaydioAppArgs"
TABLE_START, TABLE_END = "<!-- values-table:start -->", "<!-- values-table:end -->"


def values_schema() -> str:
    from services.config import RaydioAppArgs

    schema = json.loads((CHART / "values.schema.json").read_text())
    generated = RaydioAppArgs.model_json_schema(ref_template="#/$defs/" + APP_ARGS_PREFIX + "{model}")
    defs = {name: d for name, d in schema["$defs"].items() if not name.startswith(APP_ARGS_PREFIX)}
    for name, definition in generated.pop("$defs").items():
        defs[APP_ARGS_PREFIX + name] = definition
    defs[APP_ARGS_PREFIX] = generated
    schema["$defs"] = dict(sorted(defs.items()))
    return json.dumps(schema, indent=2) + "\n"


def _documented_keys(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, description, default) for each key preceded by a `# --` comment in values.yaml."""
    values = yaml.safe_load(text)
    rows, path, pending, default_note = [], [], None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            default_note = None
            continue
        if stripped.startswith("# @default --"):
            default_note = stripped[len("# @default --"):].strip()
            continue
        if stripped.startswith("#") and pending is not None:
            pending += " " + stripped[1:].strip()
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$", line)
        if not match or stripped.startswith("-"):
            continue
        depth = len(match.group(1)) // 2
        path = path[:depth] + [match.group(2)]
        if pending is not None:
            key = ".".join(path)
            default = default_note or _default(values, key)
            rows.append((key, pending, default))
            pending = None
    return rows


def _default(value: object, key: str) -> str:
    for part in key.split("."):
        value = value[part]
    return json.dumps(value)


def values_table(values_text: str) -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, description, default in _documented_keys(values_text):
        default = default.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {description.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def readme() -> str:
    text = (CHART / "README.md").read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[:start] + "\n" + values_table((CHART / "values.yaml").read_text()) + text[end:]


def main(argv: list[str]) -> int:
    targets = {CHART / "values.schema.json": values_schema(), CHART / "README.md": readme()}
    stale = [path for path, text in targets.items() if path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run `make chart-docs`.", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(targets[path])
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
