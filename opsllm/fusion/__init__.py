"""Fusion: raw telemetry windows into compact RCA samples (metrics, logs, traces; alignment; text)."""

from opsllm.fusion.align import RAW, FusionConfig, fuse, fuse_injection, fuse_window, observe

__all__ = ["RAW", "FusionConfig", "fuse", "fuse_injection", "fuse_window", "observe"]
