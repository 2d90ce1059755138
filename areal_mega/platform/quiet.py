"""Third-party warnings known to be harmless on our paths, silenced in one place (never our own).

`silence_known_warnings()` is called at start-up on every rank (train.py). Each
entry names the library and the message; anything else still shows.
"""
from __future__ import annotations

import os
import warnings

# (category, message regex, module regex of the frame the warning is attributed to)
KNOWN = [
    # megatron-core on CPU or without TE/apex: it falls back to torch implementations, which is what we run
    (UserWarning, r"(Transformer Engine and )?Apex (are|is) not installed", r"megatron\."),
    (UserWarning, r"When using async grad allreduce it is recommended", r"megatron\."),
    (UserWarning, r"full scope is deprecated", r"megatron\."),
    # megatron's optimizer probes `.grad` of every parameter-like tensor, non-leaf ones included
    (UserWarning, r"The \.grad attribute of a Tensor that is not a leaf Tensor", r"megatron\."),
    # megatron calls torch.distributed's older names for the same collectives
    (FutureWarning, r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated", r""),
]


def silence_known_warnings() -> None:
    """Ignore the KNOWN third-party warnings and Hugging Face's per-file progress bars."""
    for category, message, module in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights", "Writing model shards"
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
