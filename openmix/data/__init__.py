"""The data path: a drop-in collate function and a device-side batch hook."""
from .collate import MixCollate, derive_generator
from .device import DeviceMixer, DevicePrefetcher
from .partners import KernelPartnerSampler

__all__ = ["MixCollate", "DeviceMixer", "DevicePrefetcher", "KernelPartnerSampler", "derive_generator"]
