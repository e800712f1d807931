"""dmesr: DMESR (dual-view MLLM-enhanced multimodal sequential recommendation) as a small,
reproducible research package.

Stages, each a subpackage that imports only from the ones before it:
``data`` -> ``enrich`` -> ``evaluation`` -> ``models`` -> ``training`` -> ``experiments``.
Below them ``config``, ``paths`` (the data home) and ``shards``; above them ``explorer``,
``notebooks`` and the command line, ``cli``.
"""

__version__ = "0.1.0"
