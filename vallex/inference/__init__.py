"""Inference: from token ids to codes, on tensors (the request floor above it is :mod:`vallex.synthesis`).

``sampling`` (choosing tokens from logits), ``sampling_settings`` (``Sampling``: the settings a user may ask
for, defined once for every interface), ``ar`` (the AR batch), ``nar`` (the NAR), ``generation`` (language
ids; AR then NAR from the reference's inputs), ``ras`` and ``length_guards`` (decode-time robustness), and the
speed side: ``precision`` (the kernel plan per CPU class), ``kernels`` (Linear kernels), ``fastpath`` (folded
norms, KV cache, the one-frame step, the model's inference options), ``cpu_features`` and ``memory``.
"""
