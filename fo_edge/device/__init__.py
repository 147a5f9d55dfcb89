"""Device profiles: typed specs (``spec``) and their one loader (``load``)."""
from .load import device_text, list_devices, load_device, parse_device
from .spec import (AnalogParams, Arithmetic, Capacity, DeviceProfile, NumberFormat, Overflow, Rounding,
                   WeightScale)

__all__ = ["device_text", "list_devices", "load_device", "parse_device", "AnalogParams", "Arithmetic", "Capacity",
           "DeviceProfile", "NumberFormat", "Overflow", "Rounding", "WeightScale"]
