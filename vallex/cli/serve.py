"""``vallex serve``: the OpenAI-compatible HTTP API (``/v1/audio/speech``) alone, with uvicorn."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the OpenAI-compatible speech API over HTTP",
        description="Load the model once and serve POST /v1/audio/speech (OpenAI's text-to-speech API; audio "
        "streams back while it is made), GET /v1/voices, GET /v1/models and GET /health with uvicorn. "
        "Voices are the presets of --presets-dir.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; "
                        "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--weights-dir", type=Path, help="folder with the weights (default: $VALLEX_WEIGHTS_DIR "
                        "or the Hugging Face cache)")
    parser.add_argument("--presets-dir", type=Path, help="folder of named voice presets (default: "
                        "$VALLEX_PRESETS_DIR or ~/.local/share/vallex/presets)")
    parser.add_argument("--default-voice", help="preset used when a request names no voice or one of OpenAI's "
                        "(alloy, nova, ...); default: no prompt (the model's own random voice)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int8"], help="inference precision")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most (default: 8)")
    parser.add_argument("--max-queue", type=int, default=32, help="requests that may wait; more get HTTP 503 "
                        "(default: 32)")
    parser.add_argument("--max-input-chars", type=int, default=4096, help="longest 'input' accepted (default: 4096)")
    parser.add_argument("--api-key", default=os.environ.get("VALLEX_API_KEY", "").strip(),
                        help="require 'Authorization: Bearer KEY' on /v1/* (default: $VALLEX_API_KEY, which is "
                        "better: a command line is visible to other users; empty: no key)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}.")
    if args.max_batch < 1 or args.max_queue < 0:
        raise ValueError(f"--max-batch must be >= 1 and --max-queue >= 0, got {args.max_batch} and "
                         f"{args.max_queue}.")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
    import uvicorn

    from vallex.api import VallEX
    from vallex.prompts import PresetLibrary
    from vallex.serving import SpeechEngine
    from vallex.serving.http import SpeechAPI, create_api, preset_voices

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    library = PresetLibrary(args.presets_dir) if args.presets_dir is not None else PresetLibrary.default()
    if args.default_voice is not None and args.default_voice not in library:
        raise ValueError(f"--default-voice {args.default_voice!r} is not a preset in {library.directory}.")
    options = dict(voices=lambda: preset_voices(library), voice_names=library.names,
                   default_voice=args.default_voice, api_key=args.api_key, max_input_chars=args.max_input_chars)
    SpeechAPI(None, **options)  # checks the settings before the (slow) model load
    tts = VallEX.from_pretrained(args.weights_dir, device=args.device, dtype=args.dtype, num_threads=args.threads,
                                 presets_dir=library.directory)
    engine = SpeechEngine(tts, max_batch=args.max_batch, max_queue=args.max_queue)
    app = create_api(engine, model_loaded=lambda: True, **options)
    if not args.api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning("Listening on %s without an API key: anyone who can reach this port "
                                            "can use the model (set VALLEX_API_KEY).", args.host)
    print(f"Serving the speech API on http://{args.host}:{args.port}/v1/audio/speech "
          f"({'API key required' if args.api_key else 'no API key'}; presets: {library.directory}).",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
    return 0

