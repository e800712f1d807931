"""dmesr: DMESR (dual-view MLLM-enhanced multimodal sequential recommendation) as a small,
reproducible research package.

Stages, each a subpackage that imports only from the ones before it:
``data`` -> ``enrich`` -> ``models`` -> ``training`` -> ``evaluation`` -> ``experiments``.
"""

__version__ = "0.1.0"
