"""Command-line flags generated from config dataclass fields: one home for every default,
help text, range and choice.

    subliminal chain --help     # every config flag listed there is generated here

A command names the config fields it exposes by dotted path in its root config (`ChainConfig`:
`"samples"`, `"distill.lr"`, `"decode.batch_size"` ...). `config_flags` turns them into typer
options: the name is the field's (dashes for underscores) or `metadata["flag"]`, the type comes
from the annotation, the help is `metadata["help"]` plus the field's range, choices and the
command's default. Every generated option defaults to None, so a flag left unset keeps the
config's (or the preset's) value. `check_config` reads the same metadata to check a resolved
config before any work, so values from flags, presets and code obey one set of rules:

- `"choices"`: a tuple of allowed values, or a function returning them (a registry);
- `"min"`, `"max"`: inclusive bounds; `"gt"`: an exclusive lower bound (a learning rate);
- a config class may define `check()` for rules across its fields (sampling needs T > 0).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import typer

from subliminal.errors import SubliminalError
from subliminal.presets import PRESETS, preset_values


@dataclass(frozen=True)
class Flag:
    """A flag bound to the config field at `path`; `also` names fields that take the same
    value (`--lora-r` sets the LoRA alpha too, the chain's `--seed` the student's seed)."""

    path: str
    also: tuple[str, ...] = ()

    @property
    def param(self) -> str:
        """The Python parameter name typer passes the value under (unique per path)."""
        return self.path.replace(".", "__")


@dataclass
class Given:
    """What one command line asked for: a preset's overrides, then explicit flags on top
    (dotted path -> value). `path in given` tells a derived default not to touch a field."""

    preset: str | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __contains__(self, path: str) -> bool:
        return path in self.values

    def apply(self, cfg: Any) -> Any:
        """A copy of CFG with every given value set."""
        return with_values(cfg, self.values)


def field_of(root: type, path: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field at a dotted path below ROOT, and its resolved annotation."""
    cls = root
    *parents, last = path.split(".")
    for name in parents:
        cls = typing.get_type_hints(cls)[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if last not in fields:
        raise KeyError(f"{cls.__name__} has no field {last!r} (path {path!r})")
    return fields[last], typing.get_type_hints(cls)[last]


def flag_name(f: dataclasses.Field) -> str:
    """The field's flag, without dashes: metadata['flag'] or the name with dashes."""
    return f.metadata.get("flag", f.name.replace("_", "-"))


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The field's allowed values (None: any)."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def field_help(cls: type, name: str) -> str:
    """The help text of one field (for options that are not generated, e.g. RowsConfig's)."""
    return field_of(cls, name)[0].metadata["help"]


def get_path(cfg: Any, path: str) -> Any:
    """The value at a dotted field path of a nested config ('decode.temperature')."""
    return functools.reduce(getattr, path.split("."), cfg)


def with_values(cfg: Any, values: Mapping[str, Any]) -> Any:
    """A deep copy of CFG with the fields at the given dotted paths replaced."""
    cfg = copy.deepcopy(cfg)
    for path, value in values.items():
        *parents, last = path.split(".")
        obj = functools.reduce(getattr, parents, cfg)
        if last not in {f.name for f in dataclasses.fields(obj)}:
            raise KeyError(f"{type(obj).__name__} has no field {last!r} (path {path!r})")
        setattr(obj, last, value)
    return cfg


def scalar(hint: Any) -> type:
    """int, float, str or bool from an annotation such as `int | None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    if kind not in (int, float, str, bool):
        raise TypeError(f"no flag type for {hint!r}")
    return kind


def describe(f: dataclasses.Field, default: Any) -> str:
    """The help line: the field's help, then its choices or range and the default."""
    rules = []
    if choices := choices_of(f):
        rules.append("one of: " + ", ".join(map(str, choices)))
    for key, op in (("gt", ">"), ("min", ">="), ("max", "<=")):
        if key in f.metadata:
            rules.append(f"{op} {f.metadata[key]}")
    if default is not None:
        rules.append(f"default: {str(default).lower() if isinstance(default, bool) else default}")
    return f.metadata["help"] + (f" ({'; '.join(rules)})" if rules else "")


def option(flag: Flag, root: type, base: Any) -> inspect.Parameter:
    """The typer option of one flag, its help and default read from the field."""
    f, hint = field_of(root, flag.path)
    kind, name = scalar(hint), flag_name(f)
    decls = (f"--{name}/--no-{name}",) if kind is bool else (f"--{name}",)
    info = typer.Option(None, *decls, help=describe(f, get_path(base, flag.path)))
    return inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=Optional[kind])  # noqa: UP045 - typer reads it


def preset_option() -> inspect.Parameter:
    """The `--preset NAME` parameter every config-driven command gets."""
    info = typer.Option(None, "--preset", help=(
        f"Named preset ({', '.join(PRESETS)}; see `subliminal presets`); flags given "
        "override it."))
    return inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=Optional[str])  # noqa: UP045 - typer reads it


def config_flags(root: type, flags: Sequence[Flag | str], base: Callable[[], Any],
                 presets: bool = True) -> Callable:
    """Decorator: give a typer command the flags of FLAGS (fields of ROOT; help defaults read
    from `base()`) and, with PRESETS, `--preset`. The command's own parameters stay; instead
    of the generated ones it receives `given`, a `Given` of the preset and the flags set."""
    flags = [f if isinstance(f, Flag) else Flag(f) for f in flags]
    default = base()
    params = [option(f, root, default) for f in flags]
    names = [p.default.param_decls[0] for p in params]
    if len(set(names)) != len(names):  # a programming error: raised at import
        raise ValueError(f"duplicate flags: {names}")

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "given"]
        if {p.name for p in own} & {f.param for f in flags}:
            raise ValueError("a generated flag shadows a parameter of the command")

        @functools.wraps(fn)
        def command(*args, preset: str | None = None, **kwargs):
            values = {f.param: kwargs.pop(f.param) for f in flags}
            given = resolve_given(root, preset, flags, values)
            return fn(*args, given=given, **kwargs)

        command.__signature__ = sig.replace(
            parameters=[*own, *([preset_option()] if presets else []), *params])
        return command

    return wrap


def resolve_given(root: type, preset: str | None, flags: Sequence[Flag],
                  values: Mapping[str, Any]) -> Given:
    """The preset's overrides, then every flag that was set (with its `also` fields)."""
    given = Given(preset, preset_values(preset) if preset is not None else {})
    for f in flags:
        value = values.get(f.param)
        if value is not None:
            given.values.update({path: value for path in (f.path, *f.also)})
    with_values(root(), given.values)  # a preset naming a field that does not exist fails here
    return given


def check_value(f: dataclasses.Field, value: Any) -> None:
    """One field's value against its metadata; the error names the flag and the rule."""
    if value is None:
        return
    name = flag_name(f)
    choices = choices_of(f)
    if choices is not None and value not in choices:
        raise SubliminalError(f"unknown --{name} {value!r}; choose one of: "
                              f"{', '.join(map(str, choices))}")
    rules = (("gt", ">", lambda v, b: v > b), ("min", ">=", lambda v, b: v >= b),
             ("max", "<=", lambda v, b: v <= b))
    for key, op, ok in rules:
        if key in f.metadata and not ok(value, f.metadata[key]):
            raise SubliminalError(f"--{name} must be {op} {f.metadata[key]} (got {value})")


def check_config(cfg: Any) -> None:
    """Check a config tree before any work: every field against its metadata, then each
    config's own cross-field `check()` if it has one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_config(value)
        else:
            check_value(f, value)
    if callable(getattr(cfg, "check", None)):
        cfg.check()
