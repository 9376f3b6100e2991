"Pleasant, stateful chats with any LLM through litellm"
__version__ = "0.0.1"

# Quiet and offline from the first import: litellm fetches a model-cost map from the internet on import
# unless told to use its bundled copy, and prints "Provider List" banners for model names it can't place.
# Every module of lisette is imported through this file, so this runs before any of them imports litellm.
import os
os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')
import litellm
litellm.suppress_debug_info = True

from .messages import mk_msg, mk_msgs
from .tools import ToolError
from .replies import Usage, delta_text, usage_of
from .turn import Options, StructuredError, BudgetExceeded, Approval, needs_approval, start_early, CANCELLED, NOT_RUN
from .core import Chat, StreamAbandoned, structured
from .asink import AsyncChat, astructured
from .display import display_stream, adisplay_stream  # and, in Jupyter, responses shown as markdown

__all__ = ['Chat', 'AsyncChat', 'structured', 'astructured', 'Options', 'Usage', 'mk_msg', 'mk_msgs', 'delta_text',
           'usage_of', 'display_stream', 'adisplay_stream', 'StreamAbandoned', 'StructuredError', 'BudgetExceeded', 'Approval', 'needs_approval', 'start_early', 'ToolError',
           'CANCELLED', 'NOT_RUN']
