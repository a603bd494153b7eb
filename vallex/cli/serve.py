"""``vallex serve``: the OpenAI-compatible HTTP API (``/v1/audio/speech``) alone, with uvicorn, or (``--ray``)
replicas of it behind Ray Serve's HTTP proxy (:mod:`vallex.serving.ray_serve`)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vallex.cli.options import add_device_option, add_dtype_option, add_threads_option, threads_from_args
from vallex.config import DEFAULT_MAX_REQUEST_WORK, DEFAULT_STREAM_TIMEOUT_S


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
    parser.add_argument("--checkpoint", type=Path, help="a VALL-E X checkpoint to serve instead of the weights "
                        "folder's, e.g. runs/de/checkpoint-00002000.pt (its languages become the API's "
                        "'language' choices; default: $VALLEX_CHECKPOINT)")
    parser.add_argument("--default-voice", help="preset used when a request names no voice or one of OpenAI's "
                        "(alloy, nova, ...); default: no prompt (the model's own random voice)")
    add_device_option(parser)
    add_dtype_option(parser)
    add_threads_option(parser)
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most (default: 8)")
    parser.add_argument("--max-queue", type=int, default=32, help="requests that may wait; more get HTTP 503 "
                        "(default: 32)")
    parser.add_argument("--max-input-chars", type=int, default=4096, help="longest 'input' accepted (default: 4096)")
    parser.add_argument("--max-request-work", type=int, default=DEFAULT_MAX_REQUEST_WORK,
                        help="most sentence-candidates one request may decode: sentences x best_of x verify_rounds "
                        f"(with verify); a costlier request gets HTTP 400 (default: {DEFAULT_MAX_REQUEST_WORK}; "
                        "0: no limit)")
    parser.add_argument("--stream-timeout", type=float, default=DEFAULT_STREAM_TIMEOUT_S,
                        help="seconds a streamed response waits for a client that takes none of its audio; then "
                        f"its request is cancelled and the connection closed (default: {DEFAULT_STREAM_TIMEOUT_S:g})")
    parser.add_argument("--api-key", default=os.environ.get("VALLEX_API_KEY", "").strip(),
                        help="require 'Authorization: Bearer KEY' on /v1/* (default: $VALLEX_API_KEY, which is "
                        "better: a command line is visible to other users; empty: no key)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    ray = parser.add_argument_group(
        "scaling out with Ray Serve (--ray; pip install 'vallex[serve]')",
        "Replicas of the engine, each loading the model once, behind Serve's HTTP proxy on --host:--port; "
        "the other options apply to every replica (--threads: torch threads per replica). Without "
        "--ray-address a Ray instance is started on this machine; --min/--max-replicas autoscale.")
    ray.add_argument("--ray", action="store_true", help="serve the same API with Ray Serve (replicas)")
    ray.add_argument("--ray-address", help="the Ray cluster to deploy on, e.g. auto (default: start one here; "
                     "the weights and presets folders must exist on every node)")
    ray.add_argument("--replicas", type=int, help="a fixed number of replicas (default: 1)")
    ray.add_argument("--min-replicas", type=int, help="autoscale: fewest replicas (default: 1; 0 scales to zero)")
    ray.add_argument("--max-replicas", type=int, help="autoscale: most replicas (default: 4)")
    ray.add_argument("--target-ongoing", type=float, help="autoscale: requests in flight per replica to aim for "
                     "(default: --max-batch)")
    ray.add_argument("--upscale-delay", type=float, help="autoscale: seconds above target before a replica is "
                     "added (default: 30)")
    ray.add_argument("--downscale-delay", type=float, help="autoscale: seconds below target before one is "
                     "removed (default: 600)")
    ray.add_argument("--replica-cpus", type=float, help="CPUs Ray reserves per replica (default: --threads or 1)")
    ray.add_argument("--replica-gpus", type=float, default=0, help="GPUs per replica, e.g. 1 or 0.5 (default: 0; "
                     "needed with --device cuda: a replica given no GPU sees none)")
    ray.add_argument("--proxy-location", choices=["HeadOnly", "EveryNode"], default="HeadOnly",
                     help="HeadOnly: one address, the head node's (default); EveryNode: a proxy on every node, "
                     "for a load balancer in front")
    parser.set_defaults(func=run)


#: The Ray-only options and their "not given" values.
_RAY_OPTIONS = {"ray_address": None, "replicas": None, "min_replicas": None, "max_replicas": None,
                "target_ongoing": None, "upscale_delay": None, "downscale_delay": None, "replica_cpus": None,
                "replica_gpus": 0, "proxy_location": "HeadOnly"}
_AUTOSCALING_OPTIONS = {"min_replicas": "min_replicas", "max_replicas": "max_replicas",
                        "target_ongoing": "target_ongoing_requests", "upscale_delay": "upscale_delay_s",
                        "downscale_delay": "downscale_delay_s"}


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}.")
    if args.max_batch < 1 or args.max_queue < 0:
        raise ValueError(f"--max-batch must be >= 1 and --max-queue >= 0, got {args.max_batch} and "
                         f"{args.max_queue}.")
    if args.max_request_work < 0:
        raise ValueError(f"--max-request-work must be >= 1, or 0 for no limit, got {args.max_request_work}.")
    if not args.stream_timeout > 0:
        raise ValueError(f"--stream-timeout must be > 0 seconds, got {args.stream_timeout:g}.")
    threads_from_args(args)
    if args.ray:
        return run_with_ray(args)
    given = [name for name, unset in _RAY_OPTIONS.items() if getattr(args, name) != unset]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} needs --ray.")
    from vallex.api import VallEX, select_device
    from vallex.prompts import PresetLibrary
    from vallex.serving import SpeechEngine
    from vallex.serving.http import SpeechAPI, create_api, is_loopback, loopback_only_hosts, preset_voices
    from vallex.serving.listen import bind_socket, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    library = PresetLibrary(args.presets_dir) if args.presets_dir is not None else PresetLibrary.default()
    if args.default_voice is not None and args.default_voice not in library:
        raise ValueError(f"--default-voice {args.default_voice!r} is not a preset in {library.directory}.")
    local = is_loopback(args.host)
    options = dict(voices=lambda: preset_voices(library), voice_names=library.names,
                   default_voice=args.default_voice, api_key=args.api_key, max_input_chars=args.max_input_chars,
                   write_timeout_s=args.stream_timeout,
                   # Keyless on loopback: only requests addressed to this machine's names (DNS rebinding).
                   allowed_hosts=loopback_only_hosts(args.host, args.api_key))
    SpeechAPI(None, **options)  # checks the settings before the (slow) model load
    select_device(args.device)
    sock = bind_socket(args.host, args.port)  # a busy port is reported now, not after the model has loaded
    try:
        tts = VallEX.from_pretrained(args.weights_dir, device=args.device, dtype=args.dtype,
                                     num_threads=args.threads, presets_dir=library.directory,
                                     checkpoint=args.checkpoint)
        engine = SpeechEngine(tts, max_batch=args.max_batch, max_queue=args.max_queue,
                              max_request_work=args.max_request_work or None, read_timeout_s=args.stream_timeout)
        try:
            app = create_api(engine, model_loaded=lambda: True, **options)
            if not args.api_key and not local:
                logging.getLogger(__name__).warning(
                    "Listening on %s without an API key: anyone who can reach this port can use the model "
                    "(set VALLEX_API_KEY).", args.host)
            port = sock.getsockname()[1]
            identity = tts.identity()  # worked out now (a checkpoint no record knows is hashed once), not at a request
            print(f"Serving the speech API on http://{args.host}:{port}/v1/audio/speech "
                  f"({'API key required' if args.api_key else 'no API key'}; presets: {library.directory}; "
                  f"model: {identity.describe() if identity else 'unknown'}).", file=sys.stderr)
            serve(app, sock, log_level=args.log_level)
        finally:
            engine.close()
    finally:
        sock.close()
    return 0


def run_with_ray(args: argparse.Namespace) -> int:
    """``vallex serve --ray``: deploy the replicas, serve until Ctrl-C or SIGTERM, then take them down."""
    import signal
    import threading

    from vallex.api import select_device
    from vallex.serving import ray_serve
    from vallex.serving.http import is_loopback, loopback_only_hosts
    from vallex.serving.listen import bind_socket

    if args.port == 0:
        raise ValueError("--port 0 is not possible with --ray: Serve's proxy needs a fixed port.")
    scaling = {field: getattr(args, option) for option, field in _AUTOSCALING_OPTIONS.items()
               if getattr(args, option) is not None}
    if args.replicas is not None and scaling:
        raise ValueError("--replicas is a fixed number: leave out --min-replicas, --max-replicas, "
                         "--target-ongoing and the delays (or --replicas, to autoscale).")
    if args.replicas is not None and args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}.")
    if args.replica_cpus is not None and args.replica_cpus <= 0:
        raise ValueError(f"--replica-cpus must be > 0, got {args.replica_cpus}.")
    if args.replica_gpus < 0:
        raise ValueError(f"--replica-gpus must be >= 0, got {args.replica_gpus}.")
    ray_serve.check_replica_device(args.device, args.replica_gpus, names=("--device", "--replica-gpus"))
    autoscaling = ray_serve.Autoscaling(**scaling) if scaling else None
    local = args.ray_address is None
    select_device(args.device)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ray_serve.import_serve()
    except ray_serve.RayServeUnavailable as error:
        raise ValueError(str(error)) from None
    presets_dir = args.presets_dir
    if presets_dir is None and local:
        from vallex.prompts import PresetLibrary

        presets_dir = PresetLibrary.default().directory
    settings = ray_serve.ReplicaSettings(
        weights_dir=str(args.weights_dir) if args.weights_dir is not None else None,
        checkpoint=str(args.checkpoint) if args.checkpoint is not None else None,
        presets_dir=str(presets_dir) if presets_dir is not None else None, default_voice=args.default_voice,
        device=args.device, dtype=args.dtype, num_threads=args.threads, max_batch=args.max_batch,
        max_queue=args.max_queue, max_input_chars=args.max_input_chars, max_request_work=args.max_request_work or None,
        stream_timeout_s=args.stream_timeout, api_key=args.api_key,
        allowed_hosts=loopback_only_hosts(args.host, args.api_key))
    if local:  # this machine's folders are the replicas': check them before starting anything
        from vallex.weights.manager import resolve_weights

        settings.check()
        resolve_weights(args.weights_dir, checkpoint=args.checkpoint)  # downloads what is missing, unless offline
    else:
        from vallex.serving.http import SpeechAPI

        SpeechAPI(None, api_key=args.api_key, max_input_chars=args.max_input_chars)
    bind_socket(args.host, args.port).close()  # a busy port is reported before Ray and the replicas start
    app = ray_serve.build_app(settings, num_replicas=args.replicas, autoscaling=autoscaling,
                              num_cpus=args.replica_cpus, num_gpus=args.replica_gpus)
    import ray

    if local:
        ray_serve.init_local_ray(log_to_driver=args.log_level in ("info", "debug"))
    else:
        try:
            ray.init(address=args.ray_address)
        except ConnectionError as error:
            raise ValueError(f"Cannot reach the Ray cluster at {args.ray_address}: {error}") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            url = ray_serve.serve_http(app, host=args.host, port=args.port, proxy_location=args.proxy_location)
        except ray_serve.DeploymentFailed as error:
            raise ValueError(str(error)) from None
        if not args.api_key and not is_loopback(args.host):
            logging.getLogger(__name__).warning("Listening on %s without an API key: anyone who can reach this "
                                                "port can use the model (set VALLEX_API_KEY).", args.host)
        replicas = (f"{autoscaling.min_replicas}-{autoscaling.max_replicas} replicas, autoscaled" if autoscaling
                    else f"{args.replicas or 1} replica(s)")
        print(f"Serving the speech API on {url}/v1/audio/speech with Ray Serve ({replicas}; "
              f"{'API key required' if args.api_key else 'no API key'}). Ctrl-C stops it.", file=sys.stderr)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        print("Stopping the replicas...", file=sys.stderr)
        _stop_ray(local)
    return 0


def _stop_ray(local: bool) -> None:
    """Take the application down: all of Serve on our own instance, only ours on somebody's cluster."""
    import ray
    from ray import serve

    from vallex.serving.ray_serve import APP_NAME

    if local:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)
    ray.shutdown()
