"""Each field's valid values, declared beside the field (`ranged(...)`) in the recipe schema,
the GLUE sweep schema and `convert`'s options, and read from there by their checks
(`range_problems`), the warnings (`range_warnings`) and the docs (`range_table`, the README's
table of valid values).

A bound exists where a value outside it cannot train: a learning rate of 1e30, a seed numpy
refuses, a window of 0 batches divided by, a size no device could hold. Every float must also be
finite, and every text free of control characters (a NUL in a path is an OS error, not ours).
"""

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from mosaic_pretrain.errors import ConfigError

TIME_UNITS = ("ba", "sp", "tok", "ep")
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ba|sp|tok|ep|dur)\s*$")


@dataclass(frozen=True)
class Duration:
    """A Composer time string, parsed: `3500ba` -> Duration(3500, "ba")."""

    value: float
    unit: str


def parse_time(key: str, text: str, allow_fraction_of_run: bool = False) -> Duration:
    match = _TIME.match(str(text))
    units = (*TIME_UNITS, "dur") if allow_fraction_of_run else TIME_UNITS
    if not match or match.group(2) not in units:
        raise ConfigError(
            f"{key}: {text!r} is not a time; write a number and one of {', '.join(units)} "
            "(e.g. 2000ba)"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit != "dur" and not value.is_integer():
        raise ConfigError(f"{key}: {text!r} must be a whole number of {unit}")
    return Duration(value, unit)


# Composer's time amounts are Python ints, saved in checkpoints and logged as floats: keep them
# exact as a float.
MAX_TIME_AMOUNT = 2**53
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Range:
    """A number in [low, high] (each end open or closed, either absent), or one of `special`,
    values with a meaning of their own (-1: all). `warn_above` / `warn_at` mark legal values
    that are surprising enough to say so; `reason` says why the bound is where it is."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple = ()
    special_meaning: str = ""
    warn_above: float | None = None
    warn_at: tuple = ()
    warning: str = ""
    reason: str = ""

    def describe(self) -> str:
        """The range in words, as the error and the README say it."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{low}, {high}{right}"
        elif self.low is not None:
            if self.low == 0:
                text = "positive" if self.low_open else "not negative"
            else:
                text = f"above {low}" if self.low_open else f"at least {low}"
        elif self.high is not None:
            text = f"below {high}" if self.high_open else f"at most {high}"
        else:
            text = "any finite number"
        if self.special:
            values = " or ".join(_number(value) for value in self.special)
            text += f", or {values}{f' ({self.special_meaning})' if self.special_meaning else ''}"
        return text

    def contains(self, value: float) -> bool:
        if value in self.special:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def problem(self, key: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the schema's types are checked when the recipe is merged
        if self.contains(value):
            return None
        why = f" ({self.reason})" if self.reason else ""
        return f"{key}={_number(value)} is out of range: it must be {self.describe()}{why}"

    def surprise(self, key: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if value in self.warn_at or (self.warn_above is not None and value > self.warn_above):
            return f"{key}={_number(value)}: {self.warning}"
        return None


@dataclass(frozen=True)
class TimeRange:
    """A Composer time string in one of `units`, with an amount above zero unless `zero_ok`."""

    units: tuple[str, ...] = ("ba", "sp", "tok", "ep")
    zero_ok: bool = False
    zero_means: str = ""  # what an amount of 0 does, where it is allowed
    reason: str = ""  # why only these units

    def describe(self) -> str:
        amount = "a whole number" if self.zero_ok else "a whole number above 0"
        if "dur" in self.units:
            amount = "a number" + ("" if self.zero_ok else " above 0")
        zero = f" (0: {self.zero_means})" if self.zero_means else ""
        return f"{amount} of {', '.join(self.units)}{zero}"


@dataclass(frozen=True)
class Items:
    """A list whose every item is in `each`, with `length` items when set."""

    each: Range
    length: int | None = None

    def describe(self) -> str:
        count = f"{self.length} numbers" if self.length is not None else "numbers"
        return f"{count}, each {self.each.describe()}"


@dataclass(frozen=True)
class PathText:
    """A file or folder name the OS can take (Linux: 255 bytes a part, 4096 in all); a hub
    name or URL passes as well."""

    part_bytes: int = 255
    total_bytes: int = 4096

    def describe(self) -> str:
        return f"a path of at most {self.total_bytes} bytes, {self.part_bytes} per part"

    def problem(self, key: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        encoded = value.encode("utf-8", "surrogateescape")
        longest = max((len(part) for part in encoded.split(b"/")), default=0)
        if len(encoded) <= self.total_bytes and longest <= self.part_bytes:
            return None
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{key}={shown!r} is too long for a path: it must be {self.describe()}"


Rule = Range | TimeRange | Items | PathText
PATH = PathText()
SEED = Range(0, 2**32 - 1, reason="numpy's seeds")
RANGE_KEY = "valid_range"


def ranged(default: Any = MISSING, rule: Rule | None = None, default_factory: Any = MISSING):
    """A schema field with its valid values; omegaconf ignores the metadata."""
    metadata = {RANGE_KEY: rule}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    if isinstance(value, int) and abs(value) >= 2**20 and (value & (value - 1)) == 0:
        return f"{value:,} (2^{value.bit_length() - 1})"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _leaves(config: Any, prefix: str = ""):
    """(dotted key, value, rule or None) of every field of a schema dataclass, at every depth;
    a mapping of sections (a dataset's streams) is walked under each name."""
    for item in fields(config):
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if is_dataclass(value):
            yield from _leaves(value, f"{key}.")
        elif isinstance(value, dict) and any(is_dataclass(v) for v in value.values()):
            for name, section in value.items():
                yield from _leaves(section, f"{key}.{name}.")
        else:
            yield key, value, item.metadata.get(RANGE_KEY)


def range_problems(config: Any, rename: Callable[[str], str] = str) -> list[str]:
    """Every field outside its valid values, one line each naming the key (as `rename` writes
    it: a command-line option), value and range; also any non-finite float and any text
    holding a control character."""
    problems = []
    for field_key, value, rule in _leaves(config):
        key = rename(field_key)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                problems.append(f"{key}={item}: a number must be finite")
                break
            if isinstance(item, str) and _CONTROL.search(item):
                problems.append(f"{key}={item!r} holds a control character; remove it")
                break
        else:
            if isinstance(rule, (Range, PathText)):
                problems += [p for p in [rule.problem(key, value)] if p]
            elif isinstance(rule, Items) and isinstance(value, list):
                if rule.length is not None and len(value) != rule.length:
                    problems.append(f"{key}={value} must be {rule.describe()}")
                else:
                    problems += [
                        p for i, item in enumerate(value) if (p := rule.each.problem(key, item))
                    ][:1]
            elif isinstance(rule, TimeRange) and isinstance(value, str):
                problems += _time_problems(key, value, rule)
    return problems


def _time_problems(key: str, text: str, rule: TimeRange) -> list[str]:
    try:
        time = parse_time(key, text, allow_fraction_of_run="dur" in rule.units)
    except ConfigError as error:
        return [str(error)]
    if time.unit not in rule.units:
        why = f" ({rule.reason})" if rule.reason else ""
        return [f"{key}={text}: write it in {', '.join(rule.units)}, e.g. 10{rule.units[0]}{why}"]
    if time.value == 0 and not rule.zero_ok:
        return [f"{key}={text} is zero: it must be {rule.describe()}"]
    if time.unit != "dur" and time.value > MAX_TIME_AMOUNT:
        return [
            f"{key}={text} is out of range: at most {_number(MAX_TIME_AMOUNT)} {time.unit} "
            "(Composer counts time in integers kept exact as floats)"
        ]
    return []


def range_warnings(config: Any) -> list[str]:
    """Legal values that are surprising enough to say so before a run spends compute."""
    return [
        message
        for key, value, rule in _leaves(config)
        if isinstance(rule, Range) and (message := rule.surprise(key, value))
    ]


def range_table(schema: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, valid values) of every ranged field of a schema, for the README."""
    rows = []
    for item in fields(schema):
        key = f"{prefix}{item.name}"
        rule = item.metadata.get(RANGE_KEY)
        if rule is not None:
            text = rule.describe()
            if isinstance(rule, Range) and rule.reason:
                text += f": {rule.reason}"
            rows.append((key, text))
        for section, mapping in _section_types(item.type):
            rows += range_table(section, f"{key}.NAME." if mapping else f"{key}.")
    return rows


def _section_types(annotation: Any) -> list[tuple[type, bool]]:
    """The schema dataclasses a field's annotation holds, each with whether it is a mapping's
    value: X, X | None, dict[str, X] (| None)."""
    import typing

    if is_dataclass(annotation):
        return [(annotation, False)]
    if typing.get_origin(annotation) is dict:
        return [(a, True) for a in typing.get_args(annotation) if is_dataclass(a)]
    return [found for argument in typing.get_args(annotation) for found in _section_types(argument)]


def template_problems(key: str, template: str | None, names: tuple[str, ...] = ("run_name",)):
    """A folder template may fill in only `names` ({run_name}); any other brace is an error
    here rather than a KeyError when the run starts."""
    import string

    if template is None:
        return []
    try:
        fields_used = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as error:
        return [f"{key}={template!r}: {error}; write {{{{ and }}}} for a literal brace"]
    unknown = [name for name in fields_used if name not in names]
    if unknown:
        allowed = ", ".join(f"{{{name}}}" for name in names)
        return [f"{key}={template!r}: {{{unknown[0]}}} is not known; only {allowed} is filled in"]
    return []


def name_problems(key: str, name: str) -> list[str]:
    """A run's name goes into folder names: it must have some text."""
    return [] if name.strip() else [f"{key} is empty; give the run a name"]
