"""Example rows for each tab, built from the project's own voices in ``assets/`` (espeak-ng clips)."""
from __future__ import annotations

from demo.engine import Engine

#: (text, language) of the Long text examples.
LONG_TEXTS = [
    ("Deep learning is a form of machine learning that learns from experience and understands the world as a "
     "hierarchy of concepts. Because the computer gathers knowledge from experience, there is no need for a "
     "person to specify all the knowledge it needs. The hierarchy lets the computer learn complicated concepts "
     "by building them out of simpler ones. A graph of these concepts would be deep, with many layers.", "en"),
    ("语音合成是把文字变成声音的技术。今天的模型只需要几秒钟的录音，就能模仿一个人的声音。"
     "它还可以用同一个声音说另一种语言。我们希望这个演示能让你玩得开心！", "zh"),
    ("きょうは、いいてんきですね。こうえんに、さんぽにいきましょう。そのあと、いっしょにおちゃをのみませんか。", "ja"),
]

#: Cross-lingual lines: (voice name, text, text language, accent).
_CLONE_LINES = [
    ("en_ada", "This is how this machine has taken my voice.", "en", "none"),
    ("zh_lin", "我喜欢在周末读书和听音乐。", "zh", "none"),
    ("ja_yuki", "わたしのこえで、えいごをはなしてみます。", "ja", "none"),
    ("en_ben", "你可以听得出来我是哪里人吗？", "zh", "en"),
    ("zh_mei", "Actually, I can't speak English, but this machine helped me do it.", "en", "none"),
    ("ja_taro", "この文は、クロスリンガル合成の例です。", "ja", "none"),
]


def clone_examples(engine: Engine) -> list[list[str]]:
    """Rows of (prompt audio path, transcript, text, language, accent)."""
    return [[str(engine.voices[name].audio_path), engine.voices[name].transcript, text, language, accent]
            for name, text, language, accent in _CLONE_LINES if name in engine.voices]


def preset_examples(engine: Engine) -> list[list[str]]:
    """Rows of (text, voice name, language, accent)."""
    return [[text, name, language, accent] for name, text, language, accent in _CLONE_LINES if name in engine.voices]


def prompt_examples(engine: Engine) -> list[list[str]]:
    """Rows of (audio path, transcript, language, prompt name)."""
    return [[str(v.audio_path), v.transcript, v.language, v.name] for v in engine.voices.values()]


def long_examples(engine: Engine) -> list[list[str]]:
    """Rows of (text, voice name, mode, language), one voice of the text's language each."""
    rows = []
    for text, language in LONG_TEXTS:
        voice = next((v.name for v in engine.voices.values() if v.language == language), "none")
        rows.append([text, voice, "sliding-window" if language == "en" else "fixed-prompt", language])
    return rows


#: Speech translation lines: (voice name, target language, translation of the voice's transcript).
_TRANSLATE_LINES = [
    ("zh_lin", "en", "Hello, I am Xiaolin. The weather is very nice today, let's go for a walk."),
    ("en_ada", "zh", "你好，我叫艾达。我正在朗读这句话，作为声音提示。"),
    ("ja_yuki", "en", "Hello, I am Yuki. The weather is nice today, isn't it?"),
    ("zh_mei", "ja", "きょうのニュースへようこそ。キャスターのシャオメイです。"),
]


def translate_examples(engine: Engine) -> list[list[str]]:
    """Rows of (audio path, target language, transcript, translation, spoken language): the texts are given,
    so the examples work without speech-recognition and translation models."""
    return [[str(engine.voices[name].audio_path), target, engine.voices[name].transcript, translation,
             engine.voices[name].language] for name, target, translation in _TRANSLATE_LINES if name in engine.voices]
