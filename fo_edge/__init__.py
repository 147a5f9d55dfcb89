"""fo-edge: forward-only learning rules (FOTON, FTP, PEPITA; BP as reference) on simulated edge devices."""
from .api import SimulateConfig, SimulateResult, simulate
from .errors import ConfigError, DataError, DeviceMemoryError, DeviceProfileError, FoEdgeError, RunError
from .rules import RULES, compute_updates

__all__ = ["SimulateConfig", "SimulateResult", "simulate", "compute_updates", "RULES", "FoEdgeError",
           "ConfigError", "DataError", "DeviceMemoryError", "DeviceProfileError", "RunError"]
__version__ = "0.1.0"
