"""Reading YAML configs, `--set` overrides, validation errors as one line naming the dotted key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cryptonorm.config.experiment import Config
from cryptonorm.errors import ConfigError
from cryptonorm.text import did_you_mean

# ---------------------------------------------------------------- loading and overrides


class _TooLarge(yaml.constructor.ConstructorError):
    """A document refused for what its aliases expand to (not a syntax error)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags), with dates left as the strings they are written as.

    The config keeps dates as ISO strings anyway; PyYAML's implicit timestamps would turn `2024-02-30` into a
    ValueError from inside the parser instead of an error naming the key, and `start: 2020-01-01` into a
    date that a string field refuses. A key given twice in one mapping is an error (PyYAML would silently
    keep the last one, so half of a config could be ignored without a word). A document whose aliases
    (`*name`) expand it beyond MAX_VALUES values, or refer to themselves, is refused before it is built:
    nine anchors of nine aliases each ("billion laughs") would otherwise make every later walk over the
    config (overrides, validation) run for hours, and a self-reference would recurse without end.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        if _expanded_size(node, {}) > MAX_VALUES:
            raise _TooLarge(None, None, f"its YAML aliases (*name) expand it to more than {MAX_VALUES:,} values "
                            "or refer to themselves; a config has a few hundred: write them out", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; an explicit key may override a merged one
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


MAX_VALUES = 100_000  # values a YAML document may expand to through its aliases
MAX_CONFIG_BYTES = 1_000_000  # a config (or a sweep/claim file) is a few kB; PyYAML takes minutes on 200 MB


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is written out (an alias is the node it names, so
    each node is sized once); more than MAX_VALUES for a node that contains itself."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_VALUES + 1  # while it is being sized: a node met again inside itself is a loop
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# What PyYAML's constructors raise besides YAMLError: `!!int x` / a 5,000-digit number (ValueError), a bad
# explicit `!!timestamp` (AttributeError), deeply nested flow collections (RecursionError)
_YAML_FAILURES = (ValueError, TypeError, AttributeError, OverflowError, RecursionError)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one `--set a.b=c` item; the value is YAML-parsed (`3` -> int, `[1, 2]` -> list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set model.norm=group")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key, e.g. train.epochs")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except (yaml.YAMLError, *_YAML_FAILURES):
        value = raw  # not YAML: the plain string, validated (and refused, if wrong) like any value
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `raw` with each `dotted.key=value` set (sections created as needed)."""
    out: dict[str, Any] = _deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        set_dotted(out, parts, value)
    return out


def set_dotted(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """raw[a][b][c] = value for parts [a, b, c], creating (or replacing non-mapping) sections on the way."""
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; every failure becomes a one-line ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found; pass a path such as configs/quickstart.yaml")
    if p.is_dir():
        raise ConfigError(f"config {str(p)!r} is a directory; pass a YAML file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e.strerror or e}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {str(p)!r} is {size / 1e6:,.1f} MB; a config is a few kB (the limit is "
                          f"{MAX_CONFIG_BYTES // 1000:,} kB): is it the right file?")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e}") from e
    try:
        raw = _yaml_load(text)
    except _TooLarge as e:
        raise ConfigError(f"{p}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}; fix the syntax and retry") from e
    except RecursionError:
        raise ConfigError(f"{p}: malformed YAML: nested too deeply; a config is a few levels of sections") from None
    except _YAML_FAILURES as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{p}: malformed YAML: a value cannot be read ({first}); check explicit !!tags "
                          "and numbers") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (data, model, ...), "
                          f"not a {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a config file (or the defaults when `path` is None) and apply `--set` overrides."""
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, overrides), source=str(path) if path else "config")


# keys that moved: (old section, key) -> (new section, key). The old place is still read (a config, a
# --set, a run directory's config.yaml written before the move) and `moved_keys` says so on the command line
MOVED = {("backtest", "walk_forward"): ("split", "walk_forward")}


def migrate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(raw with every MOVED key at its new place, one note per key moved). Where both places are given
    (an old config file and a new --set, or a dumped config with the old key set on it), an item set to
    its default at one place takes the other's value; two different non-default values are a ConfigError."""
    notes = []
    for (old_sec, old_key), (new_sec, new_key) in MOVED.items():
        section = raw.get(old_sec)
        target = raw.get(new_sec)
        if not isinstance(section, dict) or old_key not in section or not isinstance(target, (dict, type(None))):
            continue
        value = section[old_key]
        current = (target or {}).get(new_key)
        if isinstance(value, dict) and isinstance(current, dict):
            value = _merge_moved(value, current, _default(new_sec, new_key), f"{old_sec}.{old_key}",
                                 f"{new_sec}.{new_key}")
        elif current is not None:
            value = current
        raw = {**raw, old_sec: {k: v for k, v in section.items() if k != old_key},
               new_sec: {**(target or {}), new_key: value}}
        notes.append(f"note: {old_sec}.{old_key} is now {new_sec}.{new_key} (it changes the training, not the "
                     f"backtest); the old key still works: rename it")
    return raw, notes


def _default(section: str, key: str) -> dict[str, Any]:
    """The default value of Config.<section>.<key> (a sub-model) as a plain mapping."""
    sub = Config.model_fields[section].annotation
    assert isinstance(sub, type) and issubclass(sub, BaseModel)
    value = sub.model_fields[key].default
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else {}


def _merge_moved(old: dict[str, Any], new: dict[str, Any], default: dict[str, Any], old_name: str,
                 new_name: str) -> dict[str, Any]:
    out = dict(old)
    for k, v in new.items():
        if k in old and old[k] != v and v != default.get(k) and old[k] != default.get(k):
            raise ConfigError(f"{old_name}.{k} = {old[k]!r} and {new_name}.{k} = {v!r}: the key moved to "
                              f"{new_name}; give it there only")
        if k not in old or v != default.get(k):
            out[k] = v
    return out


def moved_keys(raw: dict[str, Any]) -> list[str]:
    """The notes for keys of `raw` written at a place they moved from (see MOVED)."""
    return migrate(raw)[1]


def build_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a Config; errors name the dotted key and what is allowed. Keys that
    moved (MOVED) are read at their old place too."""
    try:
        return Config.model_validate(migrate(raw)[0])
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from None
    except (TypeError, ValueError) as e:  # e.g. unhashable keys in odd YAML
        raise ConfigError(f"{source}: {e}") from None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation_error(e: ValidationError) -> str:
    """One line for the first error (and a count of the others)."""
    errors = e.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    # pydantic appends the union member or the tuple index; keep the user's dotted key readable
    key = ".".join(str(p) for p in loc if not (isinstance(p, str) and "[" in p))
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        name = str(loc[-1])
        allowed = list(parent.model_fields) if parent else []
        hint = did_you_mean(name, allowed, prefix="".join(f"{p}." for p in loc[:-1]))
        hint += " " if hint else ""
        section = ".".join(map(str, loc[:-1])) or "the top level"
        return f"unknown key {key!r}: {hint}allowed in {section}: {', '.join(allowed)}{more}"
    given = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        hint = did_you_mean(str(given), re.findall(r"'([^']*)'", expected), cutoff=0.6)
        hint = f"; {hint}" if hint else ""
        return f"{key}: got {given!r}; allowed: {expected.replace(' or ', ', ')}{hint}{more}"
    if err["type"] == "missing":
        return f"{key}: required{more}"
    shown = "" if isinstance(given, dict) or "got" in msg else f" (got {given!r})"
    if key and msg.startswith(f"{key}.") or not key and re.match(r"^[a-z_]+\.[a-z_]", msg):
        return f"{msg}{shown}{more}"  # a section-level or cross-section check already names its dotted key
    return f"{key or 'config'}: {msg}{shown}{more}"


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML, keys in declaration order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
