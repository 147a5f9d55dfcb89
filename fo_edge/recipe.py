"""Paper recipes as data: ``recipes/<id>.toml`` (shipped inside the package like ``devices/``).

A recipe names one paper configuration. Every value is a table ``{ value = ..., source = "..." }`` whose
source cites the paper (section, table) or the reference code (file and line), or says "fo-edge choice" and
why. Layout::

    id = "foton-mnist-mlp"
    title = "..."
    [paper]                  # what the paper reports (test accuracy in %, and how it was selected)
    test_accuracy = { value = 98.5, source = "..." }
    [run]                    # SimulateConfig fields (see RUN_FIELDS)
    rule = { value = "foton", source = "..." }
    [rule_options]           # the rule's options (fo-edge simulate -o KEY=VALUE); FOTON's reference
    ce_T = { value = 1.0, source = "..." }   # ce_T (softmax(ce_T * y)) is stored as temperature = 1 / ce_T

:func:`load_recipe` refuses unknown keys (with a did-you-mean), values without a source and values of the
wrong type, naming the file and key in one line; :func:`recipe_settings` gives the SimulateConfig keyword
arguments, which explicit options override field by field.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import read_bounded
from .rules import rule_config

__all__ = ["Recipe", "RecipeError", "load_recipe", "list_recipes", "recipe_settings", "RUN_FIELDS", "MAX_RECIPE_BYTES"]

MAX_RECIPE_BYTES = 1 << 20


class RecipeError(ConfigError):
    """A recipe file is missing, malformed, or holds a value of the wrong kind."""


#: [run] keys and the Python types their values must have
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "rule": (str,), "device": (str,), "dataset": (str,), "model": (str,), "activation": (str,), "error": (str,),
    "epochs": (int,), "batch_size": (int,), "lr": (int, float), "seed": (int,), "backend": (str,),
    "schedule": (str,), "normalize": (str,), "drop_last": (bool,), "batch_divisor": (str,),
    "lr_milestones": (list,), "lr_gamma": (int, float), "momentum": (int, float), "weight_decay": (int, float),
    "dropout": (int, float), "init": (str,),
}
_REQUIRED_RUN = ("rule", "device", "dataset", "model", "epochs", "batch_size", "lr")
_TOP = ("id", "title", "paper", "run", "rule_options")
_PAPER = {"test_accuracy": (int, float), "selection": (str,), "seeds": (int,)}


@dataclass(frozen=True)
class Recipe:
    """run: SimulateConfig keyword arguments; rule_options: the rule's options (ce_T already converted);
    paper: what the paper reports; sources: "section.key" -> citation, for every value."""

    id: str
    title: str
    origin: str
    run: dict[str, Any]
    rule_options: dict[str, Any]
    paper: dict[str, Any]
    sources: dict[str, str]


def list_recipes() -> list[str]:
    """Ids of the bundled recipes, sorted."""
    folder = resources.files("fo_edge") / "recipes"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(TOML text, origin) of a bundled recipe by id or of a recipe file by path (bounded read)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        origin = str(path)
    else:
        path = Path(str(resources.files("fo_edge") / "recipes" / f"{name_or_path}.toml"))
        origin = f"recipes/{name_or_path}.toml"
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, list_recipes(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"unknown recipe {name_or_path!r}{hint}; `fo-edge recipes` lists them, or pass a "
                              f"path to a .toml recipe")
    try:  # FIFOs, devices and directories are refused before anything is read (files.read_bounded)
        return read_bounded(path, MAX_RECIPE_BYTES, "recipe file", RecipeError).decode("utf-8"), origin
    except UnicodeDecodeError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc}") from None


def _unknown(origin: str, section: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{origin}: {section}{key}: unknown key{hint}")


def _sourced(origin: str, where: str, raw: Any, kinds: tuple[type, ...] | None, sources: dict) -> Any:
    if not isinstance(raw, dict) or set(raw) != {"value", "source"}:
        raise RecipeError(f"{origin}: {where}: expected {{ value = ..., source = \"<citation>\" }}, got {raw!r}")
    value, source = raw["value"], raw["source"]
    if not isinstance(source, str) or not source.strip():
        raise RecipeError(f"{origin}: {where}.source: expected a non-empty citation string, got {source!r}")
    if kinds is not None:
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise RecipeError(f"{origin}: {where}.value: expected {names}, got {value!r}")
    sources[where] = source
    return value


def parse_recipe(text: str, origin: str = "<recipe>") -> Recipe:
    """Parse and validate recipe TOML text (errors name ``origin``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{origin}: not valid TOML: {exc}") from None
    _unknown(origin, "", data, _TOP)
    for key in ("id", "title", "run"):
        if key not in data:
            raise RecipeError(f"{origin}: {key}: this key is missing")
    if not isinstance(data["id"], str) or not isinstance(data["title"], str) or not isinstance(data["run"], dict):
        raise RecipeError(f"{origin}: id and title must be strings and [run] a table")
    sources: dict[str, str] = {}
    run_table, paper_table = data["run"], data.get("paper", {})
    options_table = data.get("rule_options", {})
    for name, table in (("paper", paper_table), ("rule_options", options_table)):
        if not isinstance(table, dict):
            raise RecipeError(f"{origin}: [{name}] must be a table")
    _unknown(origin, "[run] ", run_table, RUN_FIELDS)
    _unknown(origin, "[paper] ", paper_table, _PAPER)
    missing = [key for key in _REQUIRED_RUN if key not in run_table]
    if missing:
        raise RecipeError(f"{origin}: [run] {missing[0]}: this key is missing (a recipe states {', '.join(_REQUIRED_RUN)})")
    run = {key: _sourced(origin, f"run.{key}", raw, RUN_FIELDS[key], sources) for key, raw in run_table.items()}
    if "lr_milestones" in run:
        if not all(isinstance(m, int) and not isinstance(m, bool) for m in run["lr_milestones"]):
            raise RecipeError(f"{origin}: run.lr_milestones.value: expected a list of epoch numbers")
        run["lr_milestones"] = tuple(run["lr_milestones"])
    paper = {key: _sourced(origin, f"paper.{key}", raw, _PAPER[key], sources) for key, raw in paper_table.items()}
    options = {key: _sourced(origin, f"rule_options.{key}", raw, None, sources) for key, raw in options_table.items()}
    if "ce_T" in options:  # the FOTON reference's softmax(ce_T * y) is fo-edge's softmax(y / T)
        if "temperature" in options:
            raise RecipeError(f"{origin}: rule_options: give ce_T (the reference's) or temperature, not both")
        ce_t = options.pop("ce_T")
        if not isinstance(ce_t, (int, float)) or isinstance(ce_t, bool) or not ce_t > 0:
            raise RecipeError(f"{origin}: rule_options.ce_T.value: expected a number > 0, got {ce_t!r}")
        options["temperature"] = 1.0 / ce_t
    if not isinstance(run["rule"], str):
        raise RecipeError(f"{origin}: run.rule.value: expected a rule name")
    if not run["model"].startswith("c"):  # conv runs take their own options (families.conv.CONV_OPTIONS)
        try:
            rule_config(run["rule"], **options)
        except ConfigError as exc:
            raise RecipeError(f"{origin}: rule_options: {exc}") from None
    return Recipe(data["id"], data["title"], origin, run, options, paper, sources)


def load_recipe(name_or_path: str) -> Recipe:
    """A bundled recipe by id (``foton-mnist-mlp``) or a recipe file by path (anything ending in .toml)."""
    return parse_recipe(*recipe_text(name_or_path))


#: options beside a recipe that say how to run it (where, on how much data, with which checks), not what it is
RUN_CONTROLS = ("out", "overwrite", "limit", "data_dir", "torch_device", "checkpoint_every", "on_unhealthy",
                "saturation_limit", "stall_steps", "threads")


def recipe_settings(name_or_path: str, **overrides) -> dict[str, Any]:
    """SimulateConfig keyword arguments of a recipe, with ``overrides`` replacing single fields (an override of
    ``rule_options`` is merged key by key into the recipe's)."""
    recipe = load_recipe(name_or_path)
    options = {**recipe.rule_options, **overrides.pop("rule_options", {})}
    unknown = [k for k in overrides if k not in RUN_FIELDS and k not in RUN_CONTROLS]
    if unknown:
        raise RecipeError(f"cannot override {unknown[0]!r} in a recipe")
    return {**recipe.run, **overrides, "rule_options": options, "recipe": recipe.id}
