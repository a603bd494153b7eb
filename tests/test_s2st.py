"""Speech-to-speech translation, end to end on tiny models (offline).

VALL-E X, EnCodec and Vocos have random tiny weights (``tiny_tts``); Whisper is a real
``WhisperForConditionalGeneration`` whose weights make it say a fixed script, and the translator a random
tiny MarianMT (see ``test_s2st_models.py``). The tests check that each stage's outputs reach the next one:
languages, texts, token ids, the prompt's codes (= the source audio's codes) and the accent.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_s2st_models import JA_SENTENCES, scripted_whisper, speechlike, tiny_marian

from vallex.audio import SAMPLE_RATE, load_audio, save_audio
from vallex.s2st import (
    ModelUnavailableError,
    SpeechTranslator,
    TransformersTranslator,
    TransformersWhisperRecognizer,
    load_recognizer,
    load_translator,
)
from vallex.text import tokenize

TRANSCRIPT, ENGLISH = "你好，世界。", "Hello, world."


class RecordingRecognizer:
    """Passes every call to a real recognizer and keeps the arguments (to see what the pipeline asked)."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def load(self):
        self.inner.load()

    def recognize(self, wav, *, language=None, task="transcribe"):
        self.calls.append((len(wav), language, task))
        return self.inner.recognize(wav, language=language, task=task)


def refuse_translation(text, source, target):
    raise AssertionError(f"the text translator must not be used here ({source}->{target})")


@pytest.fixture(scope="module")
def zh_whisper():
    return TransformersWhisperRecognizer.from_objects(*scripted_whisper("zh", TRANSCRIPT, ENGLISH), name="scripted")


@pytest.fixture(scope="module")
def zh_ja_marian(tmp_path_factory):
    model, tokenizer = tiny_marian(tmp_path_factory.mktemp("marian"))
    return TransformersTranslator.from_objects(model, tokenizer, name="tiny-marian")


def test_zh_to_ja_wires_every_stage(tiny_tts, zh_whisper, zh_ja_marian):
    audio = speechlike([1.5, 2.0])  # 4 s: one chunk
    recognizer = RecordingRecognizer(zh_whisper)
    s2st = SpeechTranslator(tiny_tts, recognizer=recognizer, translator=zh_ja_marian)
    result = s2st.translate((SAMPLE_RATE, audio), "ja", seed=0)

    # ASR: one transcribe call, language left to Whisper, on 16 kHz audio of the same length.
    assert recognizer.calls == [(len(audio) * 2 // 3, None, "transcribe")]
    assert (result.source_language, result.target_language) == ("zh", "ja")
    assert result.transcript == TRANSCRIPT
    # MT: the translator's own output for the transcript, in Japanese script.
    assert result.translation == zh_ja_marian.translate(TRANSCRIPT, "zh", "ja")
    assert result.translation and set(result.translation) <= set("".join(JA_SENTENCES))
    assert result.sources == {"transcript": "whisper", "translation": "tiny-marian"}
    # Prompt: the source audio's own EnCodec codes and the transcript's token ids, in the source language.
    (chunk,) = result.chunks
    assert (chunk.start, chunk.end) == (0.0, len(audio) / SAMPLE_RATE)
    expected_codes = tiny_tts.codec.encode_audio(load_audio((SAMPLE_RATE, audio)))
    assert torch.equal(chunk.prompt.codes, expected_codes)
    assert chunk.prompt.text_ids == list(tokenize(TRANSCRIPT, "zh").ids)
    assert chunk.prompt.language == "zh"
    # Synthesis: Japanese text, Japanese accent, the zh prompt.
    for sentence in chunk.synthesis.sentences:
        assert sentence.tokens.language == "ja" and set(sentence.tokens.langs) == {"ja"}
        assert sentence.accent == "ja" and sentence.prompt_language == "zh"
    assert "".join(s.text for s in chunk.synthesis.sentences) == result.translation
    assert np.array_equal(result.waveform, chunk.synthesis.waveform)
    assert result.sample_rate == SAMPLE_RATE and result.waveform.dtype == np.float32 and result.duration > 0


def test_to_english_uses_whisper_translate_on_the_same_audio(tiny_tts, zh_whisper):
    recognizer = RecordingRecognizer(zh_whisper)
    s2st = SpeechTranslator(tiny_tts, recognizer=recognizer, translator=refuse_translation)
    audio = speechlike([2.0])
    result = s2st.translate((SAMPLE_RATE, audio), "en", seed=0)
    n = len(audio) * 2 // 3
    assert recognizer.calls == [(n, None, "transcribe"), (n, "zh", "translate")]
    assert (result.transcript, result.translation) == (TRANSCRIPT, ENGLISH)
    assert result.sources["translation"] == "whisper translate (scripted)"
    (sentence,) = result.chunks[0].synthesis.sentences
    assert (sentence.text, sentence.tokens.language, sentence.accent) == (ENGLISH, "en", "en")
    assert result.chunks[0].prompt.language == "zh"


def test_english_via_text_translator(tiny_tts, zh_whisper):
    calls = []

    def translator(text, source, target):
        calls.append((text, source, target))
        return "Good morning."

    s2st = SpeechTranslator(tiny_tts, recognizer=zh_whisper, translator=translator, english_via="text")
    result = s2st.translate((SAMPLE_RATE, speechlike([2.0])), "en", seed=0)
    assert calls == [(TRANSCRIPT, "zh", "en")]
    assert result.translation == "Good morning."


def test_long_input_is_cut_at_pauses_and_each_chunk_is_its_own_prompt(tiny_tts, zh_whisper):
    bursts = [2.5, 3.0, 2.5, 3.0, 2.5, 3.0]  # 16.5 s of sound + 2.5 s of pauses = 19 s
    audio = speechlike(bursts, pause=0.5)
    recognizer = RecordingRecognizer(zh_whisper)
    s2st = SpeechTranslator(tiny_tts, recognizer=recognizer, translator=refuse_translation)
    progress = []
    result = s2st.translate((SAMPLE_RATE, audio), "en", seed=3, progress=lambda *step: progress.append(step))

    assert len(result.chunks) >= 2
    n = len(result.chunks)
    assert progress == [("chunk", i, n) for i in range(n + 1)]
    assert result.chunks[0].start == 0.0 and result.chunks[-1].end == len(audio) / SAMPLE_RATE
    # Language detection only on the first chunk; the rest are told the language.
    transcribe_languages = [language for _, language, task in recognizer.calls if task == "transcribe"]
    assert transcribe_languages == [None] + ["zh"] * (len(result.chunks) - 1)
    # Burst k occupies [k * 3.0 + sum of earlier extra, ...): every cut falls inside a pause.
    edges, t = [], 0.0
    for duration in bursts:
        edges.append((t, t + duration))
        t += duration + 0.5
    for previous, chunk in zip(result.chunks, result.chunks[1:]):
        assert previous.end == chunk.start
        assert chunk.end - chunk.start <= 10.0 + 1e-6
        assert not any(a + 0.05 < chunk.start < b - 0.05 for a, b in edges), chunk.start
    for chunk in result.chunks:
        piece = audio[round(chunk.start * SAMPLE_RATE):round(chunk.end * SAMPLE_RATE)]
        assert torch.equal(chunk.prompt.codes, tiny_tts.codec.encode_audio(load_audio((SAMPLE_RATE, piece))))
        assert chunk.transcript == TRANSCRIPT and chunk.translation == ENGLISH
    assert result.transcript == TRANSCRIPT * len(result.chunks)  # zh joins without spaces
    assert result.translation == " ".join([ENGLISH] * len(result.chunks))
    pause = int(0.3 * SAMPLE_RATE)
    expected = sum(len(c.synthesis.waveform) for c in result.chunks) + pause * (len(result.chunks) - 1)
    assert len(result.waveform) == expected


def test_user_transcript_and_translation_need_no_models(tiny_tts, tmp_path):
    # Default model names (Whisper "medium", NLLB) are not on this machine: nothing may try to load them.
    s2st = SpeechTranslator(tiny_tts)
    path = tmp_path / "me.wav"
    save_audio(path, speechlike([1.5, 1.5]))
    result = s2st.translate(path, "zh", transcript="Nice to meet you.", translation="很高兴认识你。", seed=1)
    assert s2st._recognizer is None and s2st._translator is None
    assert (result.source_language, result.target_language) == ("en", "zh")
    assert (result.transcript, result.translation) == ("Nice to meet you.", "很高兴认识你。")
    assert result.sources == {"transcript": "user", "translation": "user"}
    (chunk,) = result.chunks
    assert chunk.prompt.language == "en" and chunk.prompt.transcript == "Nice to meet you."
    assert torch.equal(chunk.prompt.codes, tiny_tts.codec.encode_audio(load_audio(path)))
    assert all(s.accent == "zh" and s.tokens.language == "zh" for s in chunk.synthesis.sentences)
    # Same seed, same audio.
    again = s2st.translate(path, "zh", transcript="Nice to meet you.", translation="很高兴认识你。", seed=1)
    assert np.array_equal(again.waveform, result.waveform)


def test_user_transcript_with_text_translator(tiny_tts, zh_ja_marian):
    s2st = SpeechTranslator(tiny_tts, recognizer="/nonexistent/whisper", translator=zh_ja_marian)
    result = s2st.translate((SAMPLE_RATE, speechlike([2.0])), "ja", transcript=TRANSCRIPT, seed=0)
    assert result.source_language == "zh"  # from the transcript
    assert result.translation == zh_ja_marian.translate(TRANSCRIPT, "zh", "ja")
    assert result.sources == {"transcript": "user", "translation": "tiny-marian"}


def test_user_translation_with_recognised_transcript(tiny_tts, zh_whisper):
    s2st = SpeechTranslator(tiny_tts, recognizer=zh_whisper, translator=refuse_translation)
    result = s2st.translate((SAMPLE_RATE, speechlike([2.0])), "ja", translation="ありがとう。", seed=0)
    assert (result.transcript, result.translation) == (TRANSCRIPT, "ありがとう。")
    assert result.sources == {"transcript": "whisper", "translation": "user"}


def test_models_load_from_folders(tmp_path):
    model, processor = scripted_whisper("ja", "こんにちは。", "Hi.")
    model.save_pretrained(tmp_path / "whisper")
    processor.save_pretrained(tmp_path / "whisper")
    recognizer = load_recognizer(tmp_path / "whisper")
    assert isinstance(recognizer, TransformersWhisperRecognizer)
    heard = recognizer.recognize(np.full(16_000, 0.1, dtype=np.float32))
    assert (heard.language, heard.text) == ("ja", "こんにちは。")

    model, tokenizer = tiny_marian(tmp_path / "marian-src")
    model.save_pretrained(tmp_path / "marian")
    tokenizer.save_pretrained(tmp_path / "marian")
    translator = load_translator(tmp_path / "marian")
    in_memory = TransformersTranslator.from_objects(model, tokenizer)
    assert translator.translate(TRANSCRIPT, "zh", "ja") == in_memory.translate(TRANSCRIPT, "zh", "ja")
    assert translator.pair == ("zh", "ja")  # read from the Marian tokenizer
    with pytest.raises(ValueError, match="translates zh→ja, not en→ja"):
        translator.translate("Hello.", "en", "ja")


# Bad input ------------------------------------------------------------------------------------

def test_silence_is_refused(tiny_tts, zh_whisper):
    s2st = SpeechTranslator(tiny_tts, recognizer=zh_whisper, translator=refuse_translation)
    with pytest.raises(ValueError, match="silent"):
        s2st.translate((SAMPLE_RATE, np.zeros(3 * SAMPLE_RATE, dtype=np.float32)), "en")


def test_unsupported_spoken_language_is_refused(tiny_tts):
    korean = TransformersWhisperRecognizer.from_objects(*scripted_whisper("ko", "안녕하세요.", "Hello."))
    s2st = SpeechTranslator(tiny_tts, recognizer=korean, translator=refuse_translation)
    with pytest.raises(ValueError, match=r"Korean \('ko'\).*English, Mandarin and Japanese.*give the source language"):
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), "en")


def test_no_recognised_words_is_refused(tiny_tts):
    mute = TransformersWhisperRecognizer.from_objects(*scripted_whisper("en", "", ""))
    s2st = SpeechTranslator(tiny_tts, recognizer=mute, translator=refuse_translation)
    with pytest.raises(ValueError, match="heard no words"):
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), "zh")


def test_missing_models_are_named_in_one_message(tiny_tts):
    s2st = SpeechTranslator(tiny_tts, recognizer="medium", translator="facebook/nllb-200-distilled-600M")
    with pytest.raises(ModelUnavailableError) as caught:
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), "ja")
    message = str(caught.value)
    assert "'medium'" in message and "nllb-200-distilled-600M" in message
    assert "give the transcript yourself" in message and "give the translation yourself" in message
    assert "--" not in message  # the library names no interface's options (the CLI adds its own)
    # Only the model that is needed is reported.
    with pytest.raises(ModelUnavailableError) as caught:
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), "ja", transcript="Hello there.")
    assert "nllb" in str(caught.value) and "'medium'" not in str(caught.value)


@pytest.mark.parametrize("folder", ["/nonexistent/marian", "./no-such-marian", "~/no-such-marian"])
def test_translation_model_folder_that_does_not_exist_is_named(folder):
    # Not the hub's "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" about a path.
    with pytest.raises(ModelUnavailableError, match=f"Translation model folder {re.escape(folder)} does not exist"):
        load_translator(folder).load()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target": "fr"}, "Unknown target language 'fr'"),
    ({"target": "en", "source_language": "ko"}, "Unknown source language 'ko'"),
    ({"target": "zh", "transcript": "Hi there.", "translation": "Hello again."}, "no Chinese/Japanese characters"),
    ({"target": "en", "transcript": "Hi there.", "translation": "你好。"}, "not English"),
    ({"target": "zh", "transcript": "Hi.", "translation": "你好。", "language": "ja"}, "set by speech translation"),
])
def test_bad_arguments(tiny_tts, kwargs, match):
    s2st = SpeechTranslator(tiny_tts)
    target = kwargs.pop("target")
    with pytest.raises(ValueError, match=match):
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), target, **kwargs)


def test_long_audio_with_a_transcript_is_refused(tiny_tts):
    s2st = SpeechTranslator(tiny_tts)
    with pytest.raises(ValueError, match="at most 15 s"):
        s2st.translate((SAMPLE_RATE, speechlike([8.0, 8.0])), "zh", transcript="Hi.", translation="你好。")


def test_nllb_translator_uses_its_language_codes(tmp_path):
    """NLLB (the default family): source code first in the input, target code forced as the first output."""
    from vallex.optional_models import import_transformers

    transformers = import_transformers()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    for char in sorted(set(TRANSCRIPT + "".join(JA_SENTENCES) + "helowrd")):
        vocab.setdefault(char, len(vocab))
    tokenizer = transformers.NllbTokenizer(vocab=vocab, merges=[])  # adds the FLORES-200 codes as tokens
    config = transformers.M2M100Config(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(0)
    model = transformers.M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    translator = load_translator(tmp_path)
    assert translator.family == "nllb"
    seen = {}
    generate = translator._model.generate

    def recording_generate(**kwargs):  # the real generate; keeps what it was given and gave
        seen.update(kwargs, output=generate(**kwargs))
        return seen["output"]

    translator._model.generate = recording_generate
    for source, target, source_code, target_code in [("zh", "ja", "zho_Hans", "jpn_Jpan"),
                                                     ("en", "zh", "eng_Latn", "zho_Hans")]:
        translator.translate(TRANSCRIPT if source == "zh" else "hello world", source, target)
        assert seen["input_ids"][0, 0] == tokenizer.convert_tokens_to_ids(source_code)
        assert seen["forced_bos_token_id"] == tokenizer.convert_tokens_to_ids(target_code)
        assert seen["output"][0, 1] == tokenizer.convert_tokens_to_ids(target_code)


def test_empty_machine_translation_is_refused(tiny_tts):
    s2st = SpeechTranslator(tiny_tts, translator=lambda text, source, target: "")
    with pytest.raises(ValueError, match="came back empty"):
        s2st.translate((SAMPLE_RATE, speechlike([2.0])), "ja", transcript=TRANSCRIPT)


def test_user_transcript_to_english_uses_whisper_translate(tiny_tts, zh_whisper):
    recognizer = RecordingRecognizer(zh_whisper)
    s2st = SpeechTranslator(tiny_tts, recognizer=recognizer, translator=refuse_translation)
    audio = speechlike([2.0])
    result = s2st.translate((SAMPLE_RATE, audio), "en", transcript="今天天气很好。", seed=0)
    assert recognizer.calls == [(len(audio) * 2 // 3, "zh", "translate")]
    assert (result.transcript, result.translation) == ("今天天气很好。", ENGLISH)
    assert result.sources == {"transcript": "user", "translation": "whisper translate (scripted)"}
