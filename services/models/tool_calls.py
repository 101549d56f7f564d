"""Tool calls and structured output, without torch: request checks, prompt rendering, grammars, reply parsing.

The core imports this module to refuse a bad request before it reaches a model (it must not import torch); the
chat deployment uses it to render the prompt, build the grammar that ``guided.py`` compiles, and split the
generated text into content and tool-call pieces as it streams.

The convention (SmolLM2's chat template knows no tools, so it is ours, the one Qwen and Hermes models use): the
system prompt lists the tools as JSON and asks for ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``;
an assistant's earlier calls are rendered that way and a tool's result as a user turn inside
``<tool_response>...</tool_response>``. A reply is a tool call exactly when it starts with ``<tool_call>``; the
grammar makes sure what follows is one valid call of a declared tool.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"

# "Any JSON object": response_format {"type": "json_object"}.
JSON_OBJECT_SCHEMA: dict = {"type": "object"}

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ToolSpecError(ValueError):
    """A request's tools, tool_choice, response_format or messages cannot be used; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_schema(schema: Any) -> None:
    """Raise ValueError unless ``schema`` is a JSON schema object (checked against its metaschema)."""
    if not isinstance(schema, Mapping):
        raise ValueError(f"Got {type(schema).__name__} for the JSON schema. It must be a JSON object.")
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The JSON schema is not JSON-serialisable: {exc}") from None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"Invalid JSON schema at {where}: {exc.message}") from None


def declared_functions(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, dict]:
    """``{name: {"name", "description", "parameters"}}`` of OpenAI tool objects (or bare function objects), checked.

    Omitted ``parameters`` means the function takes none (OpenAI's rule)."""
    functions: dict[str, dict] = {}
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, Mapping):
            raise ValueError(f"Got {type(tool).__name__} for tools[{i}]. It must be an object.")
        if tool.get("type", "function") != "function":
            raise ValueError(f"Got {tool.get('type')!r} for tools[{i}].type. Only 'function' tools are supported.")
        function = tool.get("function", tool)
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise ValueError(f"Got {name!r} for tools[{i}].function.name. It must be 1-64 of a-z, A-Z, 0-9, _ and -.")
        if name in functions:
            raise ValueError(f"Got the tool name {name!r} twice. Tool names must be unique.")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}, "additionalProperties": False}
        try:
            check_schema(parameters)
        except ValueError as exc:
            raise ValueError(f"tools[{i}] ({name}) parameters: {exc}") from None
        if parameters.get("type", "object") != "object":
            raise ValueError(f"Got {parameters.get('type')!r} for the type of {name}'s parameters. It must be 'object'.")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ValueError(f"Got {type(description).__name__} for tools[{i}].function.description. It must be a string.")
        functions[name] = {"name": name, "description": description or "", "parameters": dict(parameters)}
    return functions


def tool_call_schema(tools: Sequence[Mapping[str, Any]], choice: str | Mapping[str, Any] = "required") -> dict:
    """The JSON schema of one call of a declared tool: ``{"name": <tool>, "arguments": {...}}``.

    ``tools`` are OpenAI tool objects (``{"type": "function", "function": {"name", "parameters", ...}}``) or bare
    function objects. ``choice`` is ``"required"`` or ``"auto"`` (any declared tool) or a named function
    (``{"type": "function", "function": {"name": ...}}`` or the bare name); ``"none"`` raises ValueError. Each branch
    fixes ``name`` with ``const``, so the branches are disjoint and ``anyOf`` validates exactly like ``oneOf``.
    """
    functions = declared_functions(tools)
    if not functions:
        raise ValueError("A tool call needs at least one declared tool; tools is empty.")
    if choice in ("required", "auto"):
        names = list(functions)
    elif choice == "none":
        raise ValueError("tool_choice 'none' allows no tool call.")
    else:
        name = choice if isinstance(choice, str) else (choice.get("function") or {}).get("name")
        if name not in functions:
            raise ValueError(f"Got {name!r} for tool_choice. It must name a declared tool: {', '.join(functions)}.")
        names = [name]
    # A parameters schema's "$ref": "#/$defs/X" (pydantic's nested models) points at its own root; nested under
    # "arguments" it would point at the call's root, so the definitions move there.
    definitions: dict[str, Any] = {}
    branches = []
    for name in names:
        parameters = dict(functions[name]["parameters"])
        for key in ("$defs", "definitions"):
            for ref, definition in (parameters.pop(key, None) or {}).items():
                if definitions.setdefault(f"{key}/{ref}", definition) != definition:
                    raise ValueError(f"Got two different definitions of {key}/{ref} in the tools' parameters. Rename "
                                     "one: the tools of one request share a namespace for their definitions.")
        branches.append({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": {"type": "object", **parameters}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    schema = branches[0] if len(branches) == 1 else {"anyOf": branches}
    for path, definition in definitions.items():
        key, ref = path.split("/", 1)
        schema.setdefault(key, {})[ref] = definition
    return schema


@dataclass(frozen=True)
class Guide:
    """What a request asks of the output, checked; plain data (it crosses to the deployment as ``as_dict()``).

    ``tool_choice`` is ``"none"`` (no tools), ``"auto"``, ``"required"`` or a tool's name; ``schema`` is the
    response_format's JSON schema (None: free text)."""

    functions: dict[str, dict] = field(default_factory=dict)
    tool_choice: str = "none"
    schema: dict | None = None

    @property
    def calls_tools(self) -> bool:
        return bool(self.functions) and self.tool_choice != "none"

    @property
    def constrained(self) -> bool:
        return self.calls_tools or self.schema is not None

    def as_dict(self) -> dict:
        return {"functions": self.functions, "tool_choice": self.tool_choice, "schema": self.schema}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Guide:
        return cls(**data) if data else cls()


def make_guide(tools: Sequence[Mapping[str, Any]] | None, tool_choice: str | Mapping[str, Any] | None,
               response_format: Mapping[str, Any] | None) -> Guide:
    """Check ``tools``, ``tool_choice`` and ``response_format`` (OpenAI shapes); raise :class:`ToolSpecError`."""
    try:
        functions = declared_functions(tools)
    except ValueError as exc:
        raise ToolSpecError(str(exc), "tools") from None
    if tool_choice is None:
        choice = "auto"
    elif isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ToolSpecError(f"Got {tool_choice!r} for tool_choice. It must be 'auto', 'none', 'required' or "
                                "{'type': 'function', 'function': {'name': ...}}.", "tool_choice")
        choice = tool_choice
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if tool_choice.get("type", "function") != "function" or not isinstance(name, str):
            raise ToolSpecError("Got an object for tool_choice without a function name. It must be "
                                "{'type': 'function', 'function': {'name': ...}}.", "tool_choice")
        if name not in functions:
            declared = ", ".join(functions) or "no tools are declared"
            raise ToolSpecError(f"Got {name!r} for tool_choice. It must name a declared tool ({declared}).", "tool_choice")
        choice = name
    else:
        raise ToolSpecError(f"Got {type(tool_choice).__name__} for tool_choice. It must be a string or an object.",
                            "tool_choice")
    if choice == "required" and not functions:
        raise ToolSpecError("Got tool_choice 'required' without tools. Declare at least one tool.", "tool_choice")
    if not functions:
        choice = "none"

    schema = None
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, Mapping) else None
        if kind == "json_object":
            schema = JSON_OBJECT_SCHEMA
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, Mapping) or "schema" not in spec:
                raise ToolSpecError("response_format json_schema needs json_schema.schema (and a name).",
                                    "response_format")
            try:
                check_schema(spec["schema"])
            except ValueError as exc:
                raise ToolSpecError(f"response_format.json_schema.schema: {exc}", "response_format") from None
            schema = dict(spec["schema"])
        elif kind != "text":
            raise ToolSpecError(f"Got {kind!r} for response_format.type. It must be 'text', 'json_object' or "
                                "'json_schema'.", "response_format")
    return Guide(functions, choice, schema)


# ---- prompt ----

def tools_system_prompt(functions: Mapping[str, Mapping[str, Any]], choice: str) -> str:
    listing = "\n".join(json.dumps({"type": "function", "function": f}) for f in functions.values())
    if choice not in ("auto", "required"):
        ask = f"Call the function {choice}."
    elif choice == "required":
        ask = "Call one of the functions."
    else:
        ask = "If a function helps, call it; otherwise answer in plain text."
    return ("You may call functions. They are listed as JSON in <tools></tools>:\n<tools>\n" + listing + "\n</tools>\n"
            f"{ask} To call one, reply with exactly:\n{CALL_OPEN}{{\"name\": <function-name>, \"arguments\": "
            f"<arguments-object>}}{CALL_CLOSE}")


def render_call(name: str, arguments: Any) -> str:
    if isinstance(arguments, str):  # OpenAI sends arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CALL_CLOSE}"


def render_messages(messages: Sequence[Mapping[str, Any]], guide: Guide) -> list[dict]:
    """Plain ``{"role", "content"}`` messages for a chat template without tool support: the tools in a system
    section, assistant tool calls as ``<tool_call>`` text, tool results as user turns in ``<tool_response>``."""
    rendered: list[dict] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        content = "" if content is None else content
        if role == "assistant" and message.get("tool_calls"):
            calls = [render_call(c["function"]["name"], c["function"].get("arguments", {})) for c in message["tool_calls"]]
            content = "\n".join([content, *calls] if content else calls)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        rendered.append({"role": role, "content": content})
    if guide.calls_tools:
        section = tools_system_prompt(guide.functions, guide.tool_choice)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{section}"}
        else:
            rendered.insert(0, {"role": "system", "content": section})
    return rendered


# ---- grammar ----

def _lark_json(schema: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": dict(options)})


def lark_grammar(guide: Guide, options: Mapping[str, Any]) -> str | None:
    """The llguidance lark grammar of a constrained reply, or None when the reply is free text.

    - a response schema alone: the JSON document;
    - ``required`` or a named tool: ``<tool_call>`` one valid call ``</tool_call>``;
    - ``auto``: the same call, or an answer (free text that does not start with ``<``, or the response schema's
      JSON), so that a reply starting with ``<tool_call>`` is always a whole, valid call.
    """
    if not guide.constrained:
        return None
    rules = []
    if guide.calls_tools:
        call_schema = tool_call_schema(list(guide.functions.values()), guide.tool_choice)
        rules.append(f"call: {_lark_json(call_schema, options)}")
    if guide.schema is not None:
        rules.append(f"answer: {_lark_json(guide.schema, options)}")
    elif guide.tool_choice == "auto":
        rules.append("answer: TEXT")
        rules.append(r"TEXT: /[^<\s](.|\n)*/")
    call = f'"{CALL_OPEN}" call "{CALL_CLOSE}"'
    if not guide.calls_tools:
        start = "start: answer"
    elif guide.tool_choice == "auto":
        start = f"start: answer | {call}"
    else:
        start = f"start: {call}"
    return "\n".join([start, *rules]) + "\n"


# ---- reply ----

def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*')


class ReplySplitter:
    """Splits a streamed constrained reply into content and tool-call pieces, in OpenAI's delta shape.

    ``feed(text)`` returns ``(content, calls)``: the content to show now, and tool-call deltas
    (``{"index": 0, "id", "type", "function": {"name", "arguments": ""}}`` first, then
    ``{"index": 0, "function": {"arguments": <piece>}}``). Text that may still become ``<tool_call>`` is held back.
    """

    def __init__(self) -> None:
        self.mode = "undecided"  # → "text" | "call"
        self.buffer = ""
        self.call_id: str | None = None
        self.name: str | None = None
        self.arguments = ""
        self._scan = _ObjectScanner()

    def feed(self, text: str) -> tuple[str, list[dict]]:
        if not text:
            return "", []
        if self.mode == "text":
            return text, []
        self.buffer += text
        if self.mode == "undecided":
            if self.buffer.startswith(CALL_OPEN):
                self.mode = "call"
            elif CALL_OPEN.startswith(self.buffer):
                return "", []
            else:
                self.mode, content, self.buffer = "text", self.buffer, ""
                return content, []
        deltas = []
        body = self.buffer[len(CALL_OPEN):]
        if self.name is None:
            match = _HEADER.match(body)
            if match is None:
                return "", []
            self.call_id, self.name = new_call_id(), match.group(1)
            deltas.append({"index": 0, "id": self.call_id, "type": "function",
                           "function": {"name": self.name, "arguments": ""}})
            self._start = len(CALL_OPEN) + match.end()
            self._seen = self._start
        piece = self._scan.feed(self.buffer[self._seen:])
        self._seen = len(self.buffer)
        if piece:
            self.arguments += piece
            deltas.append({"index": 0, "function": {"arguments": piece}})
        return "", deltas

    def finish(self) -> str:
        """Content still held back when the reply ends (a short text that looked like the start of a call)."""
        if self.mode == "undecided":
            self.mode, content, self.buffer = "text", self.buffer, ""
            return content
        return ""

    @property
    def call_complete(self) -> bool:
        return self._scan.done


class _ObjectScanner:
    """Passes through the characters of one JSON object and stops after its closing brace."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = self.escaped = self.done = False

    def feed(self, text: str) -> str:
        out = []
        for ch in text:
            if self.done:
                break
            if self.depth == 0 and ch.isspace():
                continue  # whitespace before the object's "{"
            out.append(ch)
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
        return "".join(out)


def parse_arguments(name: str, arguments: str, functions: Mapping[str, Mapping[str, Any]]) -> dict:
    """The call's arguments, parsed and validated against the tool's parameters; ValueError otherwise."""
    if name not in functions:
        raise ValueError(f"The model called {name!r}, which is not a declared tool.")
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, functions[name]["parameters"])
    return parsed
