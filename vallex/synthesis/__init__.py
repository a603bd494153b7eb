"""Synthesis: from a request for speech to its audio, above the tensor floor of :mod:`vallex.inference`.

``request`` (:class:`~vallex.synthesis.request.SynthesisRequest`, the :class:`~vallex.synthesis.request.Speaker`
that speaks it, :func:`~vallex.synthesis.request.plan_request`), ``text_plan`` (the text through the front end
once: sentences and the long-text mode), ``results`` (:class:`~vallex.synthesis.results.SentenceResult`,
:class:`~vallex.synthesis.results.Synthesis`, the audio pieces a :class:`~vallex.synthesis.results.Sink`
receives), ``scheduler`` (requests -> sentences -> AR, NAR, vocoder), ``streaming`` (a sentence's chunk
schedule) and ``verification`` (scoring candidates by speech recognition and speaker similarity). This floor
imports the text front end, prompts, the codec and evaluation; :mod:`vallex.inference` imports none of them.
"""
