"""The ``training:`` section checked against ms-swift's ``Seq2SeqTrainingArguments`` at config load.

The section is passed to the trainer's arguments as keyword arguments. Unchecked, a typo
(``learnig_rate``), a wrong type (``max_steps: four``) or an impossible value fails only when the
trainer is built, after the model and the data are loaded, as a traceback. Here every key is
checked against the dataclass fields (unknown ones get a close-match suggestion), values are
coerced the way HF's ``HfArgumentParser`` reads a command line (so ``learning_rate: 3e-3``, which
YAML 1.1 reads as the string ``"3e-3"``, is a number again) and a few obvious bounds are enforced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Union

from pydantic import ConfigDict, TypeAdapter, ValidationError

from coordexp.config import ConfigError

__all__ = ["ArgumentSpec", "training_argument_specs", "validate_training_arguments"]

SECTION = "training"
# Longer choice lists (``optim`` has ~40) are counted, not listed; the close match says the rest.
_MAX_LISTED_CHOICES = 12


@dataclass(frozen=True)
class ArgumentSpec:
    """One field of ``Seq2SeqTrainingArguments``: its annotation and, for enum-valued ones, the choices."""

    name: str
    hint: Any
    choices: tuple[str, ...] | None


class _BadValue(ValueError):
    """A value that does not fit: "must be <expected> (got <value><hint>)"."""

    def __init__(self, expected: str, value: object, hint: str = "") -> None:
        super().__init__(f"must be {expected} (got {value!r}{hint})")


def _enum_choices(hint: Any) -> tuple[str, ...] | None:
    """The values of an Enum in ``hint`` or in its Union (``IntervalStrategy | str``)."""
    for member in (hint, *typing.get_args(hint)):
        if isinstance(member, type) and issubclass(member, Enum):
            return tuple(str(m.value) for m in member)
    return None


@functools.cache
def training_argument_specs() -> dict[str, ArgumentSpec]:
    """The init fields of ms-swift's ``Seq2SeqTrainingArguments`` by name.

    ms-swift re-declares some enum-valued fields of transformers as plain ``str``
    (``lr_scheduler_type``); their choices come from the base class that still says the enum.
    """
    # Lazy: importing the arguments imports transformers and torch (seconds), which a config
    # without a training section, and every tool that only reads configs, does not need.
    from swift import Seq2SeqTrainingArguments

    hints_by_class = []
    for klass in Seq2SeqTrainingArguments.__mro__:
        if dataclasses.is_dataclass(klass):
            try:
                hints_by_class.append(typing.get_type_hints(klass))
            except (NameError, TypeError):  # an annotation that cannot be resolved: use the field's
                hints_by_class.append({})
    specs: dict[str, ArgumentSpec] = {}
    for field in dataclasses.fields(Seq2SeqTrainingArguments):
        if not field.init:
            continue
        hint = hints_by_class[0].get(field.name, field.type)
        choices = next(
            (c for hints in hints_by_class if (c := _enum_choices(hints.get(field.name))) is not None), None
        )
        specs[field.name] = ArgumentSpec(field.name, hint, choices)
    return specs


# ---------------------------------------------------------------- coercion


# The scalars are read by pydantic's lax mode (``TypeAdapter``): "3e-3" and "1e3" are numbers, "4" an
# int, "no"/"True" booleans, as HF's argument parser reads them. ``_scalar``'s pre-steps keep what that
# parser (and this loader before) reads otherwise: a bool is no number or string (lax takes True as 1);
# a bool is a bool or one of HF's yes/no words (lax also takes "on"/"off" and the numbers 0/1); an
# int stays an int where a float goes (HF reads ``warmup_steps: 2`` as a count, ``0.1`` as a ratio;
# lax gives 2.0); and a string for a number is an int literal (``int()``: "4" but not "4.0") or else a
# float (lax reads "4.0" as the int 4 and refuses "1e3" for an int). One difference is kept: an
# integral float beyond 64 bits (``max_steps: 1e300``) is no integer any more.
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {
    bool: TypeAdapter(bool),
    int: TypeAdapter(int),
    float: TypeAdapter(float),
    str: TypeAdapter(str, config=ConfigDict(coerce_numbers_to_str=True)),  # run_name: 2024
}


def _scalar(value: object, hint: type) -> Any:
    """``value`` as the scalar type ``hint`` (bool, int, float or str)."""
    adapter = _ADAPTERS[hint]
    if hint is bool:
        taken = isinstance(value, bool) or (isinstance(value, str) and value.lower() not in ("on", "off"))
    else:
        taken = isinstance(value, str | int | float) and not isinstance(value, bool)
    if not taken:
        raise _BadValue(_expected(hint), value)
    if hint is float and isinstance(value, int):
        return value
    if hint in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)  # an int literal stays an int, where a float goes too
    try:
        if hint in (int, float) and isinstance(value, str):
            return adapter.validate_python(_ADAPTERS[float].validate_python(value))  # "3e-3", "1e3"
        return adapter.validate_python(value)
    except ValidationError:
        raise _BadValue(_expected(hint), value) from None


def _expected(hint: Any) -> str:
    """How a type reads in "must be ..."."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _expected_any(typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is bool:
        return "a boolean"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str or (isinstance(hint, type) and issubclass(hint, Enum)):
        return "a string"
    if hint is list or origin is list:
        return "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _expected_any(members: Sequence[Any]) -> str:
    """How a union reads in "must be ...": its members' words, None left out."""
    return " or ".join(dict.fromkeys(_expected(m) for m in members if m is not type(None)))


def _matches(value: object, hint: Any) -> bool:
    """Whether ``value`` already has the type ``hint`` names (no coercion needed)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, hint if hint is int else int | float) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return isinstance(value, str | Enum)
    if hint is list or origin is list:
        return isinstance(value, list | tuple)
    if hint is dict or origin is dict:
        return isinstance(value, Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def _coerce(value: object, hint: Any) -> Any:
    """``value`` as the type ``hint`` names, read the way HF's argument parser reads a string."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint))
    if value is None:
        raise _BadValue(_expected(hint), value)
    if origin is Literal:
        return _choice(value, tuple(typing.get_args(hint)))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return (
            value.value if isinstance(value, Enum) else _scalar(value, str)
        )  # choices checked by the caller
    if hint in _ADAPTERS:
        return _scalar(value, hint)
    if hint is list or origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        items = value if isinstance(value, list | tuple) else [value]  # HF's nargs="+" with one value
        return [_coerce(x, item) for x in items]
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _BadValue("a mapping", value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _BadValue(_expected(hint), value)
    return value


def _coerce_union(value: object, members: tuple[Any, ...]) -> Any:
    if value is None:
        if type(None) in members:
            return None
        raise _BadValue(_expected_any(members), value)
    candidates = [m for m in members if m is not type(None)]
    if str in candidates and any(isinstance(m, type) and issubclass(m, Enum) for m in candidates):
        candidates.remove(str)  # as HfArgumentParser: ``IntervalStrategy | str`` takes the enum's values
    # A value that already has one of the types keeps it; else the first coercion that works wins.
    for member in sorted(candidates, key=lambda m: not _matches(value, m)):
        try:
            return _coerce(value, member)
        except _BadValue:
            continue
    raise _BadValue(_expected_any(candidates), value)


def _choice(value: object, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if value == choice or (isinstance(value, str) and value == str(choice)):
            return choice
    texts = [str(c) for c in choices]
    listed = ", ".join(repr(c) for c in choices)
    expected = f"one of {listed}" if len(choices) <= _MAX_LISTED_CHOICES else f"one of {len(choices)} choices"
    close = difflib.get_close_matches(str(value), texts, n=1)
    raise _BadValue(expected, value, f"; did you mean {close[0]!r}?" if close else "")


# ---------------------------------------------------------------- bounds

# Values no run can mean. Fields absent from the installed arguments are skipped.
_Bound = tuple[Callable[[float], bool], str]
_AT_LEAST_0: _Bound = (lambda v: v >= 0, "must be >= 0")
_AT_LEAST_1: _Bound = (lambda v: v >= 1, "must be >= 1")
_POSITIVE: _Bound = (lambda v: v > 0, "must be > 0")
_FRACTION: _Bound = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
_BOUNDS: dict[str, _Bound] = {
    "learning_rate": _AT_LEAST_0,
    "num_train_epochs": _AT_LEAST_0,
    "max_steps": (lambda v: v == -1 or v >= 1, "must be -1 (train num_train_epochs) or >= 1"),
    "per_device_train_batch_size": _AT_LEAST_1,
    "per_device_eval_batch_size": _AT_LEAST_1,
    "gradient_accumulation_steps": _AT_LEAST_1,
    "eval_accumulation_steps": _AT_LEAST_1,
    "warmup_ratio": _FRACTION,
    "warmup_steps": _AT_LEAST_0,
    "logging_steps": _POSITIVE,
    "save_steps": _POSITIVE,
    "eval_steps": _POSITIVE,
    "eval_delay": _AT_LEAST_0,
    "weight_decay": _AT_LEAST_0,
    "max_grad_norm": _AT_LEAST_0,
    "adam_beta1": _FRACTION,
    "adam_beta2": _FRACTION,
    "adam_epsilon": _AT_LEAST_0,
    "label_smoothing_factor": _FRACTION,
    "dataloader_num_workers": _AT_LEAST_0,
    "save_total_limit": _AT_LEAST_0,
    "seed": _AT_LEAST_0,
    "data_seed": _AT_LEAST_0,
}


def _check_bound(name: str, value: object) -> None:
    bound = _BOUNDS.get(name)
    if bound is None or not isinstance(value, int | float) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {value!r})")
    holds, text = bound
    if not holds(value):
        raise ValueError(f"{text} (got {value!r})")


# ---------------------------------------------------------------- the section

# Fields whose dataclass annotation is narrower than what the trainer takes: HF's ``train()`` reads
# ``resume_from_checkpoint: true`` as "the newest checkpoint in output_dir" (coordexp.run_folder.resume);
# transformers 5.x documents ``fsdp: true`` (its field's argparse ``const``) as the way to turn FSDP on.
_HINT_OVERRIDES: dict[str, Any] = {"resume_from_checkpoint": str | bool | None, "fsdp": str | bool | None}


def _unknown_key(key: object, names: Mapping[str, ArgumentSpec]) -> str:
    close = difflib.get_close_matches(str(key), list(names), n=1)
    return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")


def validate_training_arguments(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``training:`` section with every value coerced to its field's type.

    Raises :class:`ConfigError` with one line per bad key (``training.<key>: ...``). Enum-valued
    fields keep their string value (the arguments convert it), so the result dumps back to YAML.
    """
    if not section:
        return {}
    specs = training_argument_specs()
    out: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in section.items():
        spec = specs.get(key) if isinstance(key, str) else None
        if spec is None:
            errors.append(f"{SECTION}.{key}: {_unknown_key(key, specs)}")
            continue
        try:
            coerced = _coerce(value, _HINT_OVERRIDES.get(key, spec.hint))
            if spec.choices is not None and isinstance(coerced, str):
                coerced = _choice(coerced, spec.choices)
            _check_bound(key, coerced)
        except ValueError as exc:
            errors.append(f"{SECTION}.{key}: {exc}")
            continue
        out[key] = coerced
    if errors:
        raise ConfigError("\n".join(errors))
    return out
