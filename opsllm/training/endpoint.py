"""The old name of :mod:`opsllm.models.endpoint`, which moved below evaluation so that it can ask endpoints too.

The name is bound to that very module, not to a copy of its names, so that a patch of its globals (the
``OpenAI`` client it builds, say) reaches the class that reads them.
"""

import sys

from opsllm.models import endpoint

sys.modules[__name__] = endpoint
