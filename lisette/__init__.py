"Pleasant, stateful chats with any LLM through litellm"
__version__ = "0.0.1"

# Quiet and offline from the first import: litellm fetches a model-cost map from the internet on import
# unless told to use its bundled copy, and prints "Provider List" banners for model names it can't place.
import os
os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')
import litellm
litellm.suppress_debug_info = True
