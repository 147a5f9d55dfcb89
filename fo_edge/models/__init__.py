"""Models: MLP specs, initialisation, and the torch reference module."""
from .mlp import ACTIVATIONS, MLP, init_weights, parse_model_spec

__all__ = ["ACTIVATIONS", "MLP", "init_weights", "parse_model_spec"]
