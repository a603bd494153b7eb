"""The numbers of the codes VALL-E X speaks in: EnCodec 24 kHz at 6 kbps.

Audio is 24 kHz mono. EnCodec turns every 320 samples (one frame; 75 frames per second) into 8 codes, one
per codebook of its residual vector quantiser, each in 0..1023. The model's audio vocabulary is these
codes plus two ids of its own (EOS = 1024, BOS = 1025; see :class:`vallex.config.VallexConfig`).

One definition for audio loading, the codec, prompt files and the model configuration; this module
imports nothing, so any of them can use it.
"""
from __future__ import annotations

#: EnCodec 24 kHz / Vocos sample rate (samples per second).
SAMPLE_RATE = 24_000
#: EnCodec frames per second.
FRAME_RATE = 75
#: Samples per EnCodec frame (24000 / 75); Vocos outputs exactly this many per frame.
HOP = SAMPLE_RATE // FRAME_RATE
#: Codebooks at 6 kbps: the AR decoder predicts the first, the NAR decoder the other 7.
NUM_CODEBOOKS = 8
#: Codes per codebook (10 bits).
CODEBOOK_SIZE = 1024
