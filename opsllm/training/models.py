"""The old name of :mod:`opsllm.models.local`, which moved below evaluation so that it can load models too.

The name is bound to that very module, not to a copy of its names: callers (tests among them) patch its private
helpers, and a patch must reach the functions that read them.
"""

import sys

from opsllm.models import local

sys.modules[__name__] = local
