"""evring: trace LLM applications into a shared-memory event ring.

The producer API (events, spans, the LLM vocabulary) is in _producer.py, the
consumer and Python handlers in _consumer.py; both over evring._evring (C).
"""

from . import _evring  # noqa: F401
from ._producer import *  # noqa: F401,F403
from . import llm  # noqa: F401  (evring.llm: the vocabulary of <evring/llm.h>)
from ._consumer import *  # noqa: F401,F403
