"""Model families, each preparing runs for fo_edge.lifecycle (its PreparedRun interface).

``mlp`` dense and spiking nets (``784-256-256-10``), ``conv`` BCOP conv nets (``c16-c32-10``), ``mano`` multipole
attention nets (``mano:...``). :func:`family_of` picks the family from the model spec; :func:`saved_config`
reads back the options a recorded run was started with (--resume).
"""
from __future__ import annotations

from ..darcy import DARCY_DATASETS
from ..errors import ConfigError
from ..models.conv import is_conv_spec
from ..run_config import SimulateConfig, config_from_saved

__all__ = ["FAMILIES", "family_of", "prepare", "saved_config", "default_model"]

FAMILIES = ("mlp", "conv", "mano")


def family_of(model: str) -> str:
    """``mano`` for ``mano:...`` specs, ``conv`` for conv specs (``c16-c32-10``), else ``mlp``."""
    if model.startswith("mano"):
        return "mano"
    return "conv" if is_conv_spec(model) else "mlp"


def default_model(config: SimulateConfig) -> str:
    """The model a run trains when --model is not given: ``mano`` on a Darcy set, else the MLP family's."""
    if config.data_dir is None and config.dataset in DARCY_DATASETS:
        return "mano"
    from .mlp import default_model as mlp_default

    return mlp_default(config)


def prepare(config: SimulateConfig):
    """Stages 1 and 2 (validate, plan memory) of ``config`` by its model's family: a lifecycle.PreparedRun."""
    family = family_of(config.model)
    if family != "mano" and config.data_dir is None and config.dataset in DARCY_DATASETS:
        raise ConfigError(f"{config.dataset} is a field dataset (Darcy flow): train it with --model mano")
    if family == "mano":
        from .mano import prepare as prepare_family
    elif family == "conv":
        from .conv import prepare as prepare_family
    else:
        from .mlp import prepare as prepare_family
    return prepare_family(config)


def saved_config(record: dict, run_dir) -> SimulateConfig:
    """The options a recorded run was started with: ``config.simulate`` as given (conv and MANO runs), or the
    MLP record's own config."""
    saved = record["config"].get("simulate")
    if isinstance(saved, dict):
        return config_from_saved(saved)
    if record["config"].get("conv"):
        raise ConfigError(f"--resume {run_dir}: this conv run was recorded before conv runs had checkpoints; "
                          f"start it again")
    from .mlp import saved_config as mlp_saved

    return mlp_saved(record["config"])
