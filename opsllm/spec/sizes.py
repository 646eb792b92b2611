"""Byte sizes as Chaos Mesh and chaosd read them, and the sizes OpsLLM's own options take."""

from __future__ import annotations

import re

# Chaos Mesh checks a stressor's size with go-units' FromHumanSize (decimal, any case): a number, an optional
# space, then b, or k/m/g/t/p optionally followed by b or ib. `100Mi` (a Kubernetes quantity) is refused.
_HUMAN = re.compile(r"^(\d+(\.\d*)?|\.\d+) ?([kmgtp](i?b)?|b)?$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d+)%$")
# chaosd fills a disk with dd, whose units are case-sensitive: kB=1000 but K=1024, MB but M, GB but G.
_DD = re.compile(r"^\d+(c|w|b|kB|K|MB|M|GB|G)$")
_BYTES = re.compile(r"^(\d+(?:\.\d+)?) ?([KMGT]i?)?B?$", re.IGNORECASE)
_POWER = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


def check_memory_size(value: str | None) -> str | None:
    """A StressChaos memory stressor's or chaosd stress-mem's ``size``; ValueError naming the accepted forms."""
    if value is None:
        return value
    m = _PERCENT.match(value)
    if m:
        if int(m.group(1)) > 100:
            raise ValueError(f"{value!r} is over 100%; give a share of the memory from 0% to 100%")
        return value
    if not _HUMAN.match(value):
        raise ValueError(f"{value!r} is not a memory size Chaos Mesh reads; write bytes with a unit such as "
                         "'256MB', '1GB', '512KiB' (not Kubernetes' '256Mi'), or a share of memory such as '50%'")
    return value


def check_disk_size(value: str) -> str:
    """A chaosd disk-fill ``size``; ValueError naming the units chaosd documents."""
    if not _DD.match(value):
        raise ValueError(f"{value!r} is not a disk-fill size; write a whole number with one of chaosd's units "
                         "c, w, b, kB, K, MB, M, GB, G (case matters: K=1024, kB=1000), e.g. '512M' or '2G'")
    return value


def parse_bytes(text: str) -> int:
    """Bytes in '8GiB', '512MiB', '2GB' (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    m = _BYTES.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size; write a number with a unit, e.g. '8GiB', '512MiB' or '16GB'")
    return int(float(m.group(1)) * _POWER[(m.group(2) or "").upper()])


def format_bytes(n: float) -> str:
    """A byte count for people: '1.5 GiB', '300 MiB'."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
