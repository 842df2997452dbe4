"""Settings for ``udpdht node`` from a TOML file and ``UDPDHT_*`` variables, under its flags.

Precedence: flags, then the environment, then the config file (``--config FILE`` or
``$UDPDHT_CONFIG``), then the built-in defaults. The layers are read off the command's own
argparse parser, so each flag is also

* a key of the config file: its long name without the dashes (``data-dir``; ``data_dir`` too),
* an environment variable: ``UDPDHT_`` and the name in capitals (``UDPDHT_DATA_DIR``),

and a value from either goes through the flag's own ``type=`` function and ``choices``. A flag
that takes several values (``bootstrap``) takes a TOML list, or a string of them separated by
commas or spaces; a switch (``new-ring``) takes TOML ``true``/``false``, or 1/0, true/false,
yes/no, on/off from the environment. An empty variable counts as unset.

How: :class:`Layers` sets every option's default to :data:`UNSET`, keeping the built-in one
aside, so after parsing an option still UNSET was not on the command line; :meth:`Layers.resolve`
fills those in, layer by layer, and records in ``args.origins`` where each value came from.
:meth:`Layers.to_toml` writes the result back as a config file (``--print-config``).

Standard library only, and tomllib only when a file is read: ``--help`` loads nothing more.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

ENV_PREFIX: Final = "UDPDHT_"
CONFIG_ENV: Final = "UDPDHT_CONFIG"
NODE_ENV: Final = "UDPDHT_NODE"  # the client commands' default --node
#: Variables of udpdht that are not settings of a node; known, so never warned about.
#: (LOOP: udpdht.net; PURE: udpdht/__init__.py, the compiled build; COMPILE: setup.py, the
#: choice of build when installing.)
OTHER_ENV: Final = frozenset({CONFIG_ENV, NODE_ENV, "UDPDHT_LOOP", "UDPDHT_PURE", "UDPDHT_COMPILE"})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SEPARATORS = re.compile(r"[,\s]+")
_PATHS = frozenset({"DIR", "FILE"})  # the metavars of the options that name a path


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: The parser default of a layered option: "not given on the command line".
UNSET: Final[Any] = _Unset()


class ConfigError(Exception):
    """A bad config file, key or value: printed as one line, exit status 2."""


class _Option:
    """One flag of the command, as the other layers see it."""

    def __init__(self, action: argparse.Action) -> None:
        self.action = action
        self.name = next(s for s in action.option_strings if s.startswith("--"))[2:]
        self.dest = action.dest
        self.env = ENV_PREFIX + self.dest.upper()
        self.switch = action.nargs == 0  # store_true: a bool
        self.path = action.metavar in _PATHS  # a file or a directory
        self.many = action.nargs in ("+", "*")
        self.default = action.default
        if isinstance(self.default, str):  # as argparse would: a str default goes through type=
            self.default = self._check(self.default)

    def _check(self, text: str) -> Any:
        """``text`` through the flag's type= and choices, as argparse does; ValueError if bad."""
        convert = self.action.type
        try:
            value = convert(text) if callable(convert) else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ValueError(str(exc) or f"invalid value {text!r}") from None
        choices = self.action.choices
        if choices is not None and value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}, not {text!r}")
        return value

    def from_env(self, text: str) -> Any:
        if self.switch:
            word = text.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ValueError(f"expected 1/0, true/false, yes/no or on/off, not {text!r}")
            return word in _TRUE
        if self.many:
            return [self._check(t) for t in _SEPARATORS.split(text.strip()) if t]
        return self._check(text)

    def from_file(self, value: Any) -> Any:
        if self.switch:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, not {_shown(value)}")
            return value
        if self.many:
            if isinstance(value, str):
                return self.from_env(value)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected a list of strings, not {_shown(value)}")
            return [self._check(v) for v in value]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a string or a number, not {_shown(value)}")
        return self._check(str(value))


def _shown(value: Any) -> str:
    """A TOML value as the user wrote it, near enough, for an error message."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return _toml(value)


class Layers:
    """The options of one command that a config file and ``UDPDHT_*`` variables may set too.

    Made from the command's parser once its arguments are added; ``skip`` names the dests
    that only a flag sets (``--config`` itself, ``--print-config``).
    """

    def __init__(self, parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
        self.options: dict[str, _Option] = {}
        for action in parser._actions:
            if action.dest in skip or not any(s.startswith("--") for s in action.option_strings):
                continue
            if action.default is argparse.SUPPRESS:  # --help, --version
                continue
            option = _Option(action)
            self.options[option.dest] = option
            action.default = UNSET

    def resolve(self, args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
        """Fill in ``args`` the options not given as flags: from ``environ``, else from the
        config file (``args.config``, else ``$UDPDHT_CONFIG``), else the built-in default.
        ``args.origins`` then maps each dest to ``flag``, ``env NAME``, ``config FILE`` or
        ``default``. Returns warnings (variables that look like settings but are not);
        raises ConfigError for a bad file, key or value."""
        if getattr(args, "config", None) is None:
            args.config = environ.get(CONFIG_ENV) or None
        from_file = self._read(args.config) if args.config else {}
        from_env, warnings = self._environment(environ)
        origins: dict[str, str] = {}
        for dest, option in self.options.items():
            if getattr(args, dest) is not UNSET:
                origins[dest] = "flag"
            elif dest in from_env:
                setattr(args, dest, from_env[dest])
                origins[dest] = f"env {option.env}"
            elif dest in from_file:
                setattr(args, dest, from_file[dest])
                origins[dest] = f"config {args.config}"
            else:
                setattr(args, dest, option.default)
                origins[dest] = "default"
        args.origins = origins
        return warnings

    def _environment(self, environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
        values: dict[str, Any] = {}
        by_env = {o.env: o for o in self.options.values()}
        warnings = []
        for name, text in environ.items():
            if not name.startswith(ENV_PREFIX) or name in OTHER_ENV or not text:
                continue
            option = by_env.get(name)
            if option is None:
                # Compared without the prefix they all share: UDPDHT_BOGUS is not UDPDHT_HOST.
                names = [n.removeprefix(ENV_PREFIX) for n in [*by_env, *OTHER_ENV]]
                hint = _did_you_mean(name.removeprefix(ENV_PREFIX), names, ENV_PREFIX)
                warnings.append(f"ignoring {name}: not a setting of udpdht node{hint}")
                continue
            try:
                values[option.dest] = option.from_env(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return values, warnings

    def _read(self, path: str) -> dict[str, Any]:
        import tomllib

        # (A byte order mark, as Windows editors write, is taken off: tomllib refused the file
        # with "Invalid statement (at line 1, column 1)", which names nothing wrong.)
        bom = b"\xef\xbb\xbf"
        try:
            with open(path, "rb") as f:
                data = f.read()
            skip = len(bom) if data.startswith(bom) else 0
            table = tomllib.loads(data[skip:].decode())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # (TOML is UTF-8: the message named no file before)
            if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # (as Windows saves "Unicode")
                raise ConfigError(f"{path}: UTF-16 text: TOML is UTF-8; save it so") from None
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {skip + exc.start}): not valid TOML"
            ) from None
        by_key = {o.name: o for o in self.options.values()}
        by_key |= {o.dest: o for o in self.options.values()}  # data_dir as well as data-dir
        values: dict[str, Any] = {}
        for key, value in table.items():
            option = by_key.get(key)
            if option is None:
                known = sorted(o.name for o in self.options.values())
                hint = _did_you_mean(key, known) or f" (known: {', '.join(known)})"
                raise ConfigError(f"{path}: unknown key {key!r}{hint}")
            if option.dest in values:
                raise ConfigError(f"{path}: {option.name!r} is given twice ({key!r})")
            try:
                values[option.dest] = option.from_file(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
            if option.path and isinstance(values[option.dest], str):
                # A relative path in the file is the file's neighbour, wherever the node is
                # started from (an operator's trial: data-dir = "reldata" went to the working
                # directory, which is / under systemd).
                values[option.dest] = os.path.abspath(
                    os.path.join(os.path.dirname(path), values[option.dest])
                )
        return values

    def to_toml(self, args: argparse.Namespace, notes: Mapping[str, str] | None = None) -> str:
        """The resolved settings as a config file, each line saying where its value came from
        (and ``notes[dest]``, what that value means, when given)."""
        lines = ["# udpdht node settings: flags > environment > config file > defaults"]
        if args.config:
            lines.append(f"# read from {args.config}")
        notes = notes or {}
        for dest, option in self.options.items():
            value, origin = getattr(args, dest), args.origins[dest]
            if value is None:  # TOML has no null: the option is simply not set
                note = f": {notes[dest]}" if dest in notes else ""
                lines.append(f"# {option.name} is not set{note}  # {origin}")
            else:
                if option.path and isinstance(value, str):
                    # Absolute: a relative one read back from the file is taken from the
                    # file's directory, not from where it was printed (a new user's trial).
                    value = os.path.abspath(value)
                note = f"; {notes[dest]}" if dest in notes else ""
                lines.append(f"{option.name} = {_toml(value)}  # {origin}{note}")
        return "\n".join(lines) + "\n"


def _did_you_mean(word: str, known: Iterable[str], prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _toml(value: Any) -> str:
    """One value as TOML: what the flag's type= turns back into the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, tuple) and len(value) == 2:  # an address, (host, port)
        host, port = value
        return _toml(f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}")
    return '"' + "".join(_ESCAPES.get(c, c) for c in str(value)) + '"'


# A TOML basic string escapes the quote, the backslash and the control characters but tab.
_ESCAPES = {chr(c): f"\\u{c:04X}" for c in (*range(0x20), 0x7F) if c != 0x09}
_ESCAPES |= {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r"}
