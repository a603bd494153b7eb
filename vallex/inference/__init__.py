"""Inference: from token ids to codes and from requests to audio.

``sampling`` (choosing tokens from logits), ``sampling_settings`` (``Sampling``: the settings a user may ask
for, defined once for every interface), ``ar`` (the AR batch), ``nar`` (the NAR), ``generation`` (language
ids; AR then NAR from the reference's inputs), ``scheduler`` (requests -> sentences -> AR, NAR, vocoder),
``streaming`` (the chunk schedule), ``ras`` and ``length_guards`` (decode-time robustness), ``verification``
(scoring candidates by speech recognition and speaker similarity), and the speed side: ``precision`` (the
kernel plan per CPU class), ``kernels`` (Linear kernels), ``fastpath`` (folded norms, KV cache, the
one-frame step, the model's inference options), ``cpu_features`` and ``memory``.
"""
