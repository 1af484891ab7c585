"""The configuration reference, generated from conf/*.yaml and the schemas at every site build.

A mkdocs hook (mkdocs.yml: ``hooks:``): ``on_page_markdown`` replaces the line
``<!-- config-reference -->`` of docs/configuration.md with one table per config file and
group option: every key, its type (read from the schema the key is checked against: the
``_target_`` dataclass or class signature, or the command's own schema), its default and the
comment beside it in the YAML. Schema fields that the YAML leaves out are listed too.

Why at build time rather than a committed page plus a staleness test: the page is then made
from the very files the build reads, so it cannot be stale, and helpers adding keys in
parallel never conflict on a generated file. ``tests/test_docs.py`` builds the site with
``--strict`` (a YAML key without a schema field, or a schema this script cannot find, fails
the build). ``python docs/hooks/config_reference.py`` prints the page's generated part.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- config-reference -->"
TASK_CONF = ROOT / "gpt_lightning" / "cli" / "finetune_conf"  # finetune.py's task group (its searchpath)
COMMANDS = ("train", "finetune", "generate", "serve", "evaluate")
# Schemas named by class, looked up wherever they live in the package (they may move).
COMMAND_SCHEMAS = {"generate": "GenerateConfig", "serve": "ServeConfig", "evaluate": "EvaluateConfig"}
RUN_SCHEMAS = {"seed": "RunConfig", "ckpt_path": "RunConfig", "export": "RunConfig", "run": "RunConfig",
               "card": "CardConfig",
               "perf": "PerfConfig", "finetune": "FinetuneConfig", "judge": "JudgeConfig|JudgeSettings"}
GROUP_SCHEMAS = {"judge": "JudgeConfig|JudgeSettings"}  # groups whose files name no _target_
# Keys outside their group's schema that a command reads itself (judge: finetune.py's switch, evaluate.py's input).
READ_BY_COMMAND = {("judge", "enabled"), ("judge", "responses")}
SKIP_GROUPS = ("hydra",)
NOT_KEYS = ("defaults", "hydra", "_target_")
OVERRIDE_GROUPS = ("experiment", "debug")  # `# @package _global_` recipes: they set keys of train.yaml


class ReferenceError(Exception):
    pass


# ---- schemas --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def find_class(names: str) -> Any:
    """The class called ``name`` in gpt_lightning (config.schemas first); ``A|B``: A, else B."""
    import gpt_lightning

    if "|" in names:
        for name in names.split("|"):
            try:
                return find_class(name)
            except ReferenceError:
                continue
        raise ReferenceError(f"none of {names} in gpt_lightning (docs/hooks/config_reference.py names them)")
    name = names

    first = importlib.import_module("gpt_lightning.config.schemas")
    if hasattr(first, name):
        return getattr(first, name)
    for info in pkgutil.walk_packages(gpt_lightning.__path__, "gpt_lightning."):
        try:
            module = importlib.import_module(info.name)
        except Exception:
            continue
        found = getattr(module, name, None)
        if inspect.isclass(found) and found.__module__ == module.__name__:
            return found
    raise ReferenceError(f"no class {name} in gpt_lightning (docs/hooks/config_reference.py names it)")


def locate(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def fields_of(target: Any) -> dict[str, tuple[Any, Any]]:
    """{name: (annotation, default)} of a dataclass or a class/callable signature."""
    from gpt_lightning.config.schemas import _hints

    found = dict(_hints(target))
    if not dataclasses.is_dataclass(target):  # annotations typing cannot resolve: shown as written
        params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
        for name, (hint, default) in found.items():
            written = params[name].annotation if name in params else inspect.Parameter.empty
            if hint is Any and written is not inspect.Parameter.empty:
                found[name] = (written, default)
    if inspect.isclass(target) and not dataclasses.is_dataclass(target):
        takes_more = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target.__init__).parameters.values())
        base = next((b for b in target.__mro__[1:] if "__init__" in vars(b)), None)
        if takes_more and base is not None and base is not object:  # a subclass passing **kwargs on
            found = {**fields_of(base), **found}
    return found


def _takes_kwargs(target: Any) -> bool:
    if dataclasses.is_dataclass(target) or not inspect.isclass(target):
        return False
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target.__init__).parameters.values())


def type_text(hint: Any) -> str:
    """An annotation as a short Python type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    if isinstance(hint, str):
        return hint
    if hint is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


# ---- YAML with its comments ------------------------------------------------------------------
def comments(text: str) -> dict[tuple[str, ...], str]:
    """{key path: the comment on its line} (block-style YAML, as conf/ is written)."""
    out, stack = {}, []  # stack of (indent, key)
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w.]*)\s*:(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        comment = _comment(rest)
        if comment:
            out[tuple(k for _, k in stack)] = comment
    return out


def _comment(rest: str) -> str:
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return ""


def header(text: str) -> str:
    """The comment lines at the top of a YAML file, as one paragraph."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


# ---- rows -----------------------------------------------------------------------------------
def leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every leaf; a mapping with _target_ or an empty one is kept whole."""
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() if k not in NOT_KEYS or path for leaf in leaves(v, (*path, k))
                if k != "_target_"]
    return [(path, node)]


def hint_at(schema: Any, path: tuple[str, ...]) -> tuple[Any, bool]:
    """(annotation, found) of ``path`` under ``schema`` (a dataclass or class); nested dataclasses
    are followed; below an untyped field (a dict) the annotation is unknown."""
    hint: Any = schema
    for i, key in enumerate(path):
        if hint is None or not (dataclasses.is_dataclass(hint) or inspect.isclass(hint) or callable(hint)):
            return None, True  # inside an untyped mapping: its keys are checked by the code that reads it
        if typing.get_origin(hint) is not None or hint in (dict, list, Any):
            return None, True
        found = fields_of(hint)
        if key not in found:
            return None, False
        hint = found[key][0]
    return hint, True


def value_text(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and len(value) > 60:  # the judge's prompt
        return f"`{value[:57]}...`"
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        text = repr(value)
    return f"`{text}`"  # a pipe inside a code span does not split a table cell (Python-Markdown)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    out += [f"| `{key}` | {kind} | {default} | {cell(what)} |" for key, kind, default, what in rows]
    return out


def rows_for(values: dict, notes: dict, schema_of, prefix: str, source: str) -> list[tuple[str, str, str, str]]:
    """One row per leaf of ``values``; ``schema_of(path)`` gives (schema, path under it)."""
    rows = []
    for path, value in leaves(values):
        if not path or path[0] in NOT_KEYS:
            continue
        schema, rest = schema_of(path)
        if schema is None:
            raise ReferenceError(f"{source}: no schema for {'.'.join(path)}")
        hint, found = hint_at(schema, rest)
        if not found and (prefix.rstrip(".").split(".")[-1:] + list(path))[-2:] in [list(k) for k in READ_BY_COMMAND]:
            rows.append((prefix + ".".join(path), f"read by the command (not in `{schema.__name__}`)", value_text(value),
                         notes.get(path, "")))
            continue
        if not found and len(rest) == 1 and _takes_kwargs(schema):
            rows.append((prefix + ".".join(path), f"any (`{schema.__name__}` passes `**kwargs` on)", value_text(value),
                         notes.get(path, "")))
            continue
        if not found:
            raise ReferenceError(f"{source}: {'.'.join(path)} is not a field of {getattr(schema, '__name__', schema)}")
        kind = f"`{type_text(hint)}`" if hint is not None else "untyped here (checked where it is read)"
        rows.append((prefix + ".".join(path), kind, value_text(value), notes.get(path, "")))
    return rows


def schema_only_rows(schema: Any, values: dict, prefix: str, groups=()) -> list[tuple[str, str, str, str]]:
    """Fields of ``schema`` that its YAML does not list (set with ``+key=value``)."""
    rows = []
    for name, (hint, default) in fields_of(schema).items():
        if name in values or name in groups or name == "extra" or name.startswith("_"):
            continue
        shown = "" if default is inspect.Parameter.empty else value_text(default)
        rows.append((prefix + name, f"`{type_text(hint)}`", shown, f"not in the YAML: add it with `+{prefix}{name}=...`"))
    return rows


# ---- the page -------------------------------------------------------------------------------
def load(path: Path) -> tuple[dict, dict, str]:
    text = path.read_text()
    return (yaml.safe_load(text) or {}), comments(text), header(text)


def default_options(conf: Path, command: str) -> dict[str, str]:
    """{group: option} of a command's defaults list (base.yaml's, then the command's overrides)."""
    chosen: dict[str, str] = {}
    for name in ("base", command) if command in ("train", "finetune") else (command,):
        for entry in (yaml.safe_load((conf / f"{name}.yaml").read_text()) or {}).get("defaults", []):
            if isinstance(entry, dict):
                for key, option in entry.items():
                    group = key.removeprefix("override ").strip().lstrip("/")
                    if option is not None and "/" not in group and group != "base":
                        chosen[group] = option
    return chosen


def recipe_choices(conf: Path, group: str, values: dict) -> dict[str, str]:
    """{group: option} a recipe picks (``override /data: corpus``), with those of the recipes of
    the same group it builds on (``defaults: [gpt2_124m_fineweb, _self_]``)."""
    chosen: dict[str, str] = {}
    for entry in values.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            base = yaml.safe_load((conf / group / f"{entry}.yaml").read_text()) or {}
            chosen.update(recipe_choices(conf, group, base))
        elif isinstance(entry, dict):
            for key, option in entry.items():
                group_name = key.removeprefix("override ").strip().lstrip("/")
                chosen[group_name] = option
                if group_name == "task":  # finetune.py's task group picks the data group in turn
                    task = yaml.safe_load((TASK_CONF / "task" / f"{option}.yaml").read_text()) or {}
                    chosen.update(recipe_choices(TASK_CONF, "task", task))
    return chosen


def group_target(conf: Path, group: str, option: str) -> Any:
    values = yaml.safe_load((conf / group / f"{option}.yaml").read_text()) or {}
    if "_target_" in values:
        return locate(values["_target_"])
    if group in GROUP_SCHEMAS:
        return find_class(GROUP_SCHEMAS[group])
    return None


def command_schema(conf: Path, command: str, chosen: dict[str, str] | None = None):
    """``schema_of(path)`` for the keys a command's YAML (or a recipe for it) sets; ``chosen``: the
    group options a recipe picks (``override /data: corpus``) over the command's defaults."""
    options = {**default_options(conf, "finetune" if command == "finetune" else "train"), **(chosen or {})}

    def schema_of(path: tuple[str, ...]):
        head = path[0]
        if command in COMMAND_SCHEMAS:
            return find_class(COMMAND_SCHEMAS[command]), path
        if head in RUN_SCHEMAS:
            top_level = head in ("seed", "ckpt_path", "export")  # RunConfig's fields at the top; run.name under run
            return find_class(RUN_SCHEMAS[head]), path if top_level else path[1:]
        if head in options:
            return group_target(conf, head, options[head]), path[1:]
        return None, path

    return schema_of


def group_section(conf: Path, group: str) -> list[str]:
    files = sorted((conf / group).glob("*.yaml"))
    out = [f"### `{group}`", "", "Options: " + ", ".join(f"`{group}={f.stem}`" for f in files) + ".", ""]
    for file in files:
        values, notes, about = load(file)
        out += [f"#### `{group}={file.stem}`", ""]
        if about:
            out += [about, ""]
        if group in OVERRIDE_GROUPS:
            chosen = recipe_choices(conf, group, values)
            rows = rows_for(values, notes, command_schema(conf, "train", chosen), "", f"{group}/{file.name}")
            overrides = [f"`{k}: {v}`" for e in values.get("defaults", []) if isinstance(e, dict) for k, v in e.items()]
            if overrides:
                out += ["Group choices: " + ", ".join(overrides) + ".", ""]
            out += ["Keys it sets:", "", *table(rows), ""]
            continue
        nested_targets = {k: v for k, v in values.items() if isinstance(v, dict) and "_target_" in v}
        if nested_targets:  # logger options: {name: {_target_: ...}}
            for name, node in nested_targets.items():
                target = locate(node["_target_"])
                out += [f"Builds `{node['_target_']}`.", ""]
                rows = rows_for(node, {p[1:]: c for p, c in notes.items() if p[:1] == (name,)},
                                lambda p, t=target: (t, p), f"{group}.{name}.", f"{group}/{file.name}")
                out += [*table(rows), ""]
            continue
        target = group_target(conf, group, file.stem)
        if target is None:
            out += ["No keys." if not values else "Untyped keys.", ""]
            continue
        if "_target_" in values:
            out += [f"Schema: `{values['_target_']}`.", ""]
        rows = rows_for(values, notes, lambda p, t=target: (t, p), f"{group}.", f"{group}/{file.name}")
        if dataclasses.is_dataclass(target):
            rows += schema_only_rows(target, values, f"{group}.")
        out += [*table(rows), ""]
    return out


def command_section(conf: Path, command: str) -> list[str]:
    values, notes, about = load(conf / f"{command}.yaml")
    out = [f"### `{command}.py` (`conf/{command}.yaml`)", "", about, ""]
    options = default_options(conf, command)
    out += ["Default groups: " + ", ".join(f"`{g}={o}`" for g, o in options.items()) + ".", ""]
    rows = rows_for(values, notes, command_schema(conf, command), "", f"{command}.yaml")
    if command in ("train", "finetune"):
        base_values, base_notes, _ = load(conf / "base.yaml")
        base_rows = rows_for(base_values, base_notes, command_schema(conf, command), "", "base.yaml")
        own = {r[0] for r in rows}
        rows = [r for r in base_rows if r[0] not in own] + rows
    elif command in COMMAND_SCHEMAS:
        schema = find_class(COMMAND_SCHEMAS[command])
        rows += schema_only_rows(schema, values, "", groups=options)
    out += [*table(rows), ""]
    return out


def reference(conf: Path = ROOT / "conf") -> str:
    """The generated part of docs/configuration.md."""
    sys.path.insert(0, str(ROOT))
    out = ["## Commands", "", "The keys each command's YAML sets itself (groups come below).", ""]
    for command in COMMANDS:
        out += command_section(conf, command)
    out += ["## Groups", "", "Each option of each group, as `group=option` selects it.", ""]
    for group in sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        out += group_section(conf, group)
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # the mkdocs hook
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())


if __name__ == "__main__":
    print(reference())
