"""MkDocs hook: the recipe key reference and the component reference, made from the code at every build.

A page asks for one with a line of its own, `<!-- reference: recipe-keys -->` or `<!-- reference: components -->`,
which this hook replaces by Markdown made from `gluon_yolo3.schema` (DEFAULTS, RULES, DESCRIPTIONS) and from the
registries (every entry's arguments with their defaults, and its docstring), plus the example plugins of plugins/.
So the reference shows what the checkout holds, and a key without a description or an entry without a docstring
stops the build (`problems()`; tests/docs checks it too).
"""
from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml

MARKER = re.compile(r"^<!-- reference: ([\w-]+) -->$", re.M)
REPO = Path(__file__).resolve().parents[2]


def _registries():
    with warnings.catch_warnings():         # the libraries' own deprecation notes, not the site's
        warnings.simplefilter("ignore", DeprecationWarning)
        from gluon_yolo3.registry import ALL, import_all_builtins
        import_all_builtins()
    return ALL


def _load_example_plugins(repo: Path = REPO) -> List[Path]:
    from gluon_yolo3.plugins import load_plugin
    files = sorted((repo / "plugins").glob("*.py"))
    for path in files:
        load_plugin(str(path))
    return files


def _flow(value: Any) -> str:
    """A default as YAML in flow style, on one line: null, true, [cpu:0], {type: sgd, momentum: 0.9}."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10 ** 6)
    return text.strip().removesuffix("...").strip()


def _link_registries(text: str, page: str = "components.md") -> str:
    """Each registry's name in capitals becomes a link to its section of the component reference."""
    names = "|".join(sorted(_registries(), key=len, reverse=True))
    return re.sub(rf"\b({names})\b", lambda m: f"[{m.group(1)}]({page}#{m.group(1).lower()})", text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def key_type(default: Any) -> str:
    from gluon_yolo3.schema import is_component
    if default is None:
        return "optional"
    if is_component(default):
        return "component"
    kinds = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "list"))
    return next(name for kind, name in kinds if isinstance(default, kind))


def key_rule(path: str, default: Any) -> str:
    from gluon_yolo3.schema import is_component, rule_of
    rule = rule_of(path, default)
    if rule is not None:
        text = rule.expected
    elif is_component(default):
        text = "a component config ({type: ...} or a type name)"
    else:
        text = "any value; checked where it is used"
    return text + (", or null" if default is None and rule is not None else "")


def recipe_keys() -> str:
    """Markdown: one table per section of the schema, every key with its type, default, rule and description."""
    from gluon_yolo3.schema import DESCRIPTIONS, keys
    sections: Dict[str, List[str]] = {}
    for path, default in keys():
        section = path.split(".")[0] if "." in path else "top level"
        row = (f"| `{path}` | {key_type(default)} | `{_cell(_flow(default))}` | {_cell(key_rule(path, default))} | "
               f"{_cell(_link_registries(DESCRIPTIONS.get(path, '')))} |")
        sections.setdefault(section, []).append(row)
    out = []
    for section, rows in sections.items():
        anchor = "keys-" + section.replace(" ", "-")
        out += [f"### {section} {{ #{anchor} }}", "", "| key | type | default | must be | what it does |",
                "|---|---|---|---|---|", *rows, ""]
    return "\n".join(out)


def _signature(name: str, parameters) -> str:
    """`name(a: int = 1, b=None)` as the entry's constructor or function is called; `**kwargs` when open."""
    if parameters is None:
        return f"{name}(**kwargs)"
    parts = []
    for p in parameters:
        text = p.name
        if p.annotation is not p.empty:
            kind = p.annotation.__name__ if isinstance(p.annotation, type) else str(p.annotation).strip("'")
            text += f": {kind}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        parts.append(text)
    return f"{name}({', '.join(parts)})"


def _doc(obj: Callable) -> str:
    return inspect.cleandoc(obj.__doc__ or "")     # its own, not a base class's


def _used_by(registry: str) -> List[str]:
    """The recipe keys whose description names `registry`."""
    from gluon_yolo3.schema import DESCRIPTIONS
    return [key for key, text in DESCRIPTIONS.items() if re.search(rf"\b{registry}\b", text)]


def _entry(registry, name: str, first_name: Dict[int, str]) -> List[str]:
    obj = registry.get(name)
    anchor = f"{registry.name.lower()}-{name}"
    out = [f"### `{name}` {{ #{anchor} }}", ""]
    if first_name[id(obj)] != name:
        out += [f"Another name for [`{first_name[id(obj)]}`](#{registry.name.lower()}-{first_name[id(obj)]}).", ""]
        return out
    out += [f"`{_signature(name, registry.arguments(name))}`", "", _doc(obj), ""]
    return out


def components(repo: Path = REPO) -> str:
    """Markdown: per registry, every entry with its arguments and docstring; then the example plugins' entries."""
    plugin_files = _load_example_plugins(repo)
    out = []
    plugins: List[str] = []
    for reg_name, registry in _registries().items():
        first_name: Dict[int, str] = {}
        for name in registry.names():
            first_name.setdefault(id(registry.get(name)), name)
        keys = ", ".join(f"`{k}`" for k in _used_by(reg_name)) or "none"
        out += [f"## {reg_name} {{ #{reg_name.lower()} }}", "", f"Recipe keys: {keys}.", ""]
        for name in registry.names():
            obj = registry.get(name)
            if str(getattr(obj, "__module__", "")).startswith("gluon_yolo3."):
                out += _entry(registry, name, first_name)
            else:
                source = Path(inspect.getsourcefile(obj)).resolve()
                where = source.relative_to(repo) if source.is_relative_to(repo) else source.name
                plugins += [f"### `{name}` ({reg_name}, `{where}`) {{ #{reg_name.lower()}-{name} }}", "",
                            f"`{_signature(name, registry.arguments(name))}`", "", _doc(obj), ""]
    if plugins:
        listed = ", ".join(f"`{p.relative_to(repo)}`" for p in plugin_files)
        out += ["## Example plugins { #example-plugins }", "",
                f"Not built in: a recipe loads them with `plugins:` ({listed}).", "", *plugins]
    return "\n".join(out)


def problems(repo: Path = REPO) -> List[str]:
    """What the references cannot show: a recipe key without a description (or a description without a key),
    a registry entry without a docstring, a registry that no key's description names."""
    _registries()
    from gluon_yolo3.schema import DESCRIPTIONS, keys
    paths = [path for path, _ in keys()]
    out = [f"recipe key '{p}' has no description in gluon_yolo3/schema.py DESCRIPTIONS" for p in paths
           if not DESCRIPTIONS.get(p, "").strip()]
    out += [f"DESCRIPTIONS has '{p}', which is not a key of gluon_yolo3/schema.py DEFAULTS" for p in DESCRIPTIONS
            if p not in paths]
    _load_example_plugins(repo)
    for reg_name, registry in _registries().items():
        out += [f"{reg_name} entry '{name}' ({registry.get(name).__module__}) has no docstring"
                for name in registry.names() if not _doc(registry.get(name))]
        if not _used_by(reg_name):
            out.append(f"no recipe key's description in DESCRIPTIONS names the registry {reg_name}")
    out += [f"{p.relative_to(repo)} has no opening comment saying what it is" for p in _recipe_files(repo)
            if not _recipe_summary(p)]
    return out


def _recipe_summary(path: Path) -> str:
    """The first sentence of a recipe's opening comment ('' without one)."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.startswith("#  ") or line.strip() == "#":
            break
        words += line[1:].split()
    text = " ".join(words)
    end = re.search(r"\.(\s|$)", text)
    return text[:end.start() + 1] if end else text


def _recipe_files(repo: Path) -> List[Path]:
    return sorted((repo / "recipes").glob("*.yaml")) + sorted((repo / "recipes/_base_").glob("*.yaml"))


def recipes(repo: Path = REPO) -> str:
    """Markdown: every recipe of recipes/ (and recipes/_base_/) with the first sentence of its comment."""
    rows = [f"| `{p.relative_to(repo / 'recipes')}` | {_cell(_recipe_summary(p))} |" for p in _recipe_files(repo)]
    return "\n".join(["| recipe | what it is |", "|---|---|", *rows, ""])


GENERATORS = {"recipe-keys": recipe_keys, "components": components, "recipes": recipes}


def render(markdown: str, where: str = "page") -> str:
    """`markdown` with each reference marker replaced by the reference it names."""
    def replace(match):
        if match.group(1) not in GENERATORS:
            raise ValueError(f"{where}: unknown reference '{match.group(1)}' (known: {', '.join(GENERATORS)})")
        return GENERATORS[match.group(1)]()
    return MARKER.sub(replace, markdown)


# files of the checkout that pages show (images), put into the site under the same path
CHECKOUT_FILES = ("zoo/bccd_tiny/eval/pr_curves.png",)


def on_files(files, config):
    from mkdocs.structure.files import File
    repo = Path(config["config_file_path"]).parent
    for path in CHECKOUT_FILES:
        files.append(File(path, str(repo), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if not MARKER.search(markdown):
        return markdown
    from mkdocs.exceptions import PluginError
    found = problems()
    if found:
        raise PluginError("the reference cannot be made:\n  " + "\n  ".join(found))
    try:
        return render(markdown, where=page.file.src_path)
    except ValueError as err:
        raise PluginError(str(err)) from None
