"""Tiny offline stand-ins for Whisper and MarianMT, built with ``transformers`` from small configs.

They are the real model classes (``WhisperForConditionalGeneration``, ``MarianMTModel``) with real tokenizers
built from files made here, so the pipeline's loading, prompting and decoding code runs unchanged:

* :func:`scripted_whisper`: weights set by hand so that the decoder *says a chosen script*: its first
  step (language detection) picks a chosen language token, and the text it then writes depends on the
  task token (``<|transcribe|>`` → the transcript, ``<|translate|>`` → the English translation). The
  decoder ignores the audio (cross-attention output is zeroed); everything else is Whisper's own code.
* :func:`tiny_marian`: a random MarianMT whose target side can only produce pieces of a Japanese
  character-level SentencePiece model (other logits are biased away, EOS too, so output is never empty).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vallex.optional_models import import_transformers

LANGUAGE_TOKENS = ["<|en|>", "<|zh|>", "<|ja|>", "<|ko|>"]
SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftranscript|>", *LANGUAGE_TOKENS, "<|translate|>", "<|transcribe|>",
                  "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]

ZH_SENTENCES = ["你好，世界。", "今天天气很好。", "我喜欢喝咖啡。", "我们一起去学校吧。", "谢谢你的帮助。"]
JA_SENTENCES = ["こんにちは、せかい。", "きょうはいいてんきです。", "わたしはコーヒーがすきです。", "ありがとうございます。",
                "いっしょにがっこうへいきましょう。"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (Whisper's byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def whisper_tokenizer() -> Any:
    """A Whisper tokenizer with one token per byte (no merges) and Whisper's special tokens."""
    transformers = import_transformers()
    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    for index, token in enumerate(SPECIAL_TOKENS):
        vocab[token] = 256 + index
    tokenizer = transformers.WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def scripted_whisper(language: str, transcript: str, translation: str) -> tuple[Any, Any]:
    """(WhisperForConditionalGeneration, WhisperProcessor) that detects ``language`` and says the scripts.

    Decoder state at position p is 10·e_p (learned positional embedding, one dimension per position) plus the
    task token's dimension, which one attention head copies from position 2 to every later position. The
    output projection maps (position p, task) to the script's token at p+1. (Two scripts that put two
    tokens each found in both scripts at the same position would tie; the tests' scripts do not.)
    """
    transformers = import_transformers()
    tokenizer = whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    d_model, positions = 96, 64
    task_dim = {"transcribe": 64, "translate": 65}
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=d_model, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=1, decoder_attention_heads=1, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=positions, pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"], tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    decoder = model.model.decoder
    layer = decoder.layers[0]
    with torch.no_grad():
        decoder.embed_tokens.weight.zero_()
        for task, dim in task_dim.items():
            decoder.embed_tokens.weight[ids[f"<|{task}|>"], dim] = 10.0
        decoder.embed_positions.weight.zero_()
        decoder.embed_positions.weight[:, :positions] = 10.0 * torch.eye(positions)
        attention = layer.self_attn
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj,
                       layer.encoder_attn.out_proj, layer.fc2):
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
        attention.q_proj.weight[70, :positions] = 5.0  # every query...
        attention.k_proj.weight[70, 2] = 5.0  # ...matches the key at position 2 (the task token)
        for dim in task_dim.values():
            attention.v_proj.weight[dim, dim] = 1.0
            attention.out_proj.weight[dim, dim] = 1.0
        logits = model.proj_out.weight
        logits.zero_()
        logits[ids[f"<|{language}|>"], 0] = 1.0  # step 0 (after <|startoftranscript|>): the language
        scripts = {task: tokenizer(text, add_special_tokens=False).input_ids + [ids["<|endoftext|>"]]
                   for task, text in (("transcribe", transcript), ("translate", translation))}
        for task, script in scripts.items():
            other = set(scripts["translate" if task == "transcribe" else "transcribe"])
            for offset, token in enumerate(script):
                logits[token, 3 + offset] += 1.0  # position 3 is <|notimestamps|>: text starts after it
                # A token of both scripts leans to neither task, so that it never ties with one that
                # belongs to the current task's script alone.
                logits[token, task_dim[task]] = 0.5 if token in other else 1.0
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        lang_to_id={token: ids[token] for token in LANGUAGE_TOKENS},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True, suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    return model, processor


def _train_char_spm(sentences: list[str], path: Path) -> Any:
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4), model_writer=buffer, model_type="char",
        vocab_size=len(set("".join(sentences))) + 4, character_coverage=1.0, bos_id=-1, eos_id=2, unk_id=1,
        pad_id=-1, minloglevel=2, hard_vocab_limit=False,
    )
    path.write_bytes(buffer.getvalue())
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue())


def tiny_marian(folder: Path, source: str = "zh", target: str = "ja") -> tuple[Any, Any]:
    """(MarianMTModel, MarianTokenizer) zh→ja with random weights; its output is Japanese kana."""
    transformers = import_transformers()
    folder.mkdir(parents=True, exist_ok=True)
    source_spm = _train_char_spm(ZH_SENTENCES, folder / "source.spm")
    target_spm = _train_char_spm(JA_SENTENCES, folder / "target.spm")
    special = ("</s>", "<unk>", "<s>")
    source_pieces = {source_spm.id_to_piece(i) for i in range(source_spm.get_piece_size())} - set(special)
    target_pieces = {target_spm.id_to_piece(i) for i in range(target_spm.get_piece_size())} - set(special)
    vocab: dict[str, int] = {}
    for piece in ["</s>", "<unk>", *sorted(source_pieces | target_pieces), "<pad>"]:
        vocab.setdefault(piece, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = transformers.MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"),
                                             str(folder / "vocab.json"), source_lang=source, target_lang=target)
    config = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16,
        pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"], decoder_start_token_id=vocab["<pad>"],
    )
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        bias = torch.full((1, len(vocab)), -1e4)
        bias[0, sorted(vocab[p] for p in target_pieces if p != "▁")] = 0.0
        model.final_logits_bias.copy_(bias)
    return model, tokenizer


def speechlike(durations: list[float], pause: float = 0.5, sample_rate: int = 24_000, seed: int = 0) -> np.ndarray:
    """float32 ``[N]``: voiced bursts (harmonics of a 100-180 Hz pitch, smooth envelope) separated by silence."""
    rng = np.random.default_rng(seed)
    pieces = []
    for duration in durations:
        t = np.arange(int(duration * sample_rate)) / sample_rate
        f0 = 100 + 80 * rng.random()
        voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.random()) / k for k in range(1, 6))
        envelope = np.sin(np.pi * t / duration) ** 0.5
        pieces += [0.2 * voiced * envelope, np.zeros(int(pause * sample_rate))]
    return np.concatenate(pieces[:-1]).astype(np.float32)


# The stand-ins themselves (the pipeline tests rely on these properties) ----------------------------

def test_scripted_whisper_detects_and_says_its_scripts():
    from vallex.asr import TransformersWhisperRecognizer

    recognizer = TransformersWhisperRecognizer.from_objects(*scripted_whisper("zh", "你好，世界。", "Hello, world."))
    wav = np.random.default_rng(1).standard_normal(16_000 * 2).astype(np.float32) * 0.1
    heard = recognizer.recognize(wav)
    assert (heard.language, heard.text, heard.task) == ("zh", "你好，世界。", "transcribe")
    english = recognizer.recognize(wav, language="zh", task="translate")
    assert (english.language, english.text, english.task) == ("zh", "Hello, world.", "translate")


def test_tiny_marian_writes_only_target_pieces(tmp_path):
    model, tokenizer = tiny_marian(tmp_path)
    ids = model.generate(**tokenizer("你好，世界。", return_tensors="pt"), max_new_tokens=8, num_beams=2)
    text = tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
    assert len(text) >= 4
    assert set(text) <= set("".join(JA_SENTENCES))
