"""Scale-out with Ray Serve: the batched speech engine as replicas behind one HTTP address.

    import ray
    from vallex.serving.ray_serve import Autoscaling, ReplicaSettings, build_app, serve_http
    ray.init()                                     # or ray.init(address="auto") on a cluster
    app = build_app(ReplicaSettings(weights_dir="/models/vallex", max_batch=8),
                    autoscaling=Autoscaling(min_replicas=1, max_replicas=4))
    print(serve_http(app, host="0.0.0.0", port=8000))

Each replica (a Ray actor) loads :class:`~vallex.api.VallEX` once and serves with ONE
:class:`~vallex.serving.SpeechEngine`; its HTTP app is :func:`vallex.serving.http.create_api`'s, so the routes,
errors, API key and chunked streaming are exactly those of ``vallex serve``. Serve's HTTP proxy sends each
request to a replica with room (of two picked at random, the one with fewer requests in flight); a replica
takes ``max_batch + max_queue`` requests at most, so its engine batches them and never refuses one; beyond
that requests wait in the proxy (``max_queued_requests``, then 503). The autoscaler keeps about
``target_ongoing_requests`` (default: ``max_batch``) requests in flight per replica.
:func:`replicas_needed` says how many replicas a request rate needs.

Ray is imported only inside the functions that need it (``pip install 'vallex[serve]'``); importing this
module, and everything else in the library, works without it. ``app_builder`` is the entry point for Ray's
own tools: ``serve run vallex.serving.ray_serve:app_builder weights_dir=/models max_batch=8``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from vallex.config import DEFAULT_MAX_REQUEST_WORK, DEFAULT_STREAM_TIMEOUT_S

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI
    from ray.serve import Application, Deployment

    from vallex.prompts import PresetLibrary

#: The Ray release the deployment is written and tested against (the ``serve`` extra pins it).
RAY_VERSION = "2.60.0"
INSTALL_HINT = "pip install 'vallex[serve]'"
#: The deployment's name in Serve (its replicas' logs say ``ServeReplica:vallex:VallexSpeech``).
DEPLOYMENT_NAME = "VallexSpeech"
#: The Serve application's default name (``serve status``, ``serve.delete``).
APP_NAME = "vallex"
PROXY_LOCATIONS = ("HeadOnly", "EveryNode")


class RayServeUnavailable(ImportError):
    """Ray Serve is not installed (or not importable); the message says how to install it."""


class DeploymentFailed(RuntimeError):
    """The replicas could not start (e.g. missing weights on their node); the message is their error."""


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Unavailable|Failed)\b.*?:")


def import_serve() -> Any:
    """``ray.serve``, or :class:`RayServeUnavailable` naming ``pip install 'vallex[serve]'``."""
    try:
        from ray import serve
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise RayServeUnavailable(f"Ray Serve is not installed ({missing} cannot be imported): "
                                  f"{INSTALL_HINT} (ray[serve]=={RAY_VERSION}).") from None
    return serve


@dataclass(frozen=True)
class ReplicaSettings:
    """What each replica loads and how it serves (the options of ``vallex serve``).

    Paths are read on the replica's node: on a cluster, the weights and presets must be there (a shared
    volume, or the same folder on every node). ``api_key`` None reads ``$VALLEX_API_KEY`` on the replica;
    "" means no key. ``num_threads``: torch threads per replica (:func:`build_app`'s default: the replica's
    ``num_cpus``).
    """

    weights_dir: str | None = None
    presets_dir: str | None = None
    checkpoint: str | None = None  # a VALL-E X checkpoint instead of the weights folder's (vallex serve --checkpoint)
    default_voice: str | None = None
    device: str | None = None
    dtype: str | None = None
    num_threads: int | None = None
    max_batch: int = 8
    max_queue: int = 32
    max_input_chars: int = 4096
    max_request_work: int | None = DEFAULT_MAX_REQUEST_WORK  # vallex serve --max-request-work (None: no limit)
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S  # vallex serve --stream-timeout
    api_key: str | None = field(default=None, repr=False)  # never in a log line
    allowed_hosts: tuple[str, ...] | None = None  # e.g. LOOPBACK_HOSTS: a keyless server on loopback

    def __post_init__(self) -> None:
        for name in ("weights_dir", "presets_dir", "checkpoint"):  # str, not Path: what travels stays plain
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if self.max_batch < 1 or self.max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {self.max_batch} and "
                             f"{self.max_queue}.")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}.")
        if isinstance(self.allowed_hosts, str):  # Serve's key=value arguments: "localhost,127.0.0.1"
            object.__setattr__(self, "allowed_hosts", tuple(filter(None, self.allowed_hosts.split(","))))
        elif self.allowed_hosts is not None:  # a list from a config file travels as a tuple
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        if self.max_input_chars < 1:
            raise ValueError(f"max_input_chars must be >= 1, got {self.max_input_chars}.")
        if self.max_request_work is not None and self.max_request_work < 1:
            raise ValueError(f"max_request_work must be >= 1 (or None: no limit), got {self.max_request_work}.")
        if not self.stream_timeout_s > 0:
            raise ValueError(f"stream_timeout_s must be > 0 seconds, got {self.stream_timeout_s}.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ReplicaSettings:
        """Settings from strings or values (Serve's ``key=value`` arguments, a config file's ``args``)."""
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown setting(s) {', '.join(unknown)}: use {', '.join(known)}.")
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("num_threads", "max_batch", "max_queue", "max_input_chars", "max_request_work") \
                    and value is not None:
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{name} must be an integer, got {value!r}.") from None
            if name == "stream_timeout_s":
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{name} must be a number of seconds, got {value!r}.") from None
            parsed[name] = value
        return cls(**parsed)

    def library(self) -> PresetLibrary:
        """The voice presets: ``presets_dir``, else the default folder (``$VALLEX_PRESETS_DIR``, ...)."""
        from vallex.prompts import PresetLibrary

        return PresetLibrary(self.presets_dir) if self.presets_dir is not None else PresetLibrary.default()

    def api_options(self, library: PresetLibrary) -> dict[str, Any]:
        """The options of :func:`vallex.serving.http.create_api`, as ``vallex serve`` gives them."""
        from vallex.serving.http import preset_voices

        return dict(voices=lambda: preset_voices(library), voice_names=library.names,
                    default_voice=self.default_voice, api_key=self.api_key, max_input_chars=self.max_input_chars,
                    allowed_hosts=self.allowed_hosts, write_timeout_s=self.stream_timeout_s)

    def check(self, library: PresetLibrary | None = None) -> None:
        """Raise ``ValueError`` for a bad API key or default voice (before any model is loaded)."""
        from vallex.serving.http import SpeechAPI

        library = library if library is not None else self.library()
        if self.default_voice is not None and self.default_voice not in library:
            raise ValueError(f"The default voice {self.default_voice!r} is not a preset in {library.directory}.")
        SpeechAPI(None, **self.api_options(library))


class SpeechReplica:
    """One Serve replica: the model, loaded once, and one engine serving ``create_api``'s routes.

    Not a deployment by itself: :func:`deployment` wraps it with ``serve.ingress()`` (the app is built per
    replica by ``__serve_build_asgi_app__``, after the model has loaded) and ``serve.deployment``.
    """

    def __init__(self, settings: ReplicaSettings) -> None:
        from vallex.api import VallEX
        from vallex.serving.engine import SpeechEngine

        library = settings.library()
        settings.check(library)
        self.settings = settings
        self._options = settings.api_options(library)
        tts = VallEX.from_pretrained(settings.weights_dir, device=settings.device, dtype=settings.dtype,
                                     num_threads=settings.num_threads, presets_dir=library.directory,
                                     checkpoint=settings.checkpoint)
        self.engine = SpeechEngine(tts, max_batch=settings.max_batch, max_queue=settings.max_queue,
                                   max_request_work=settings.max_request_work, read_timeout_s=settings.stream_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        from vallex.serving.http import create_api

        return create_api(self.engine, model_loaded=lambda: True, **self._options)

    def check_health(self) -> None:
        """Serve's periodic probe: a replica whose engine stopped is replaced."""
        if not self.engine.alive:
            raise RuntimeError("The speech engine's worker has stopped.")

    def __del__(self) -> None:
        """Serve calls this when the replica stops: running requests finish, waiting ones fail."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close(timeout=10)


@dataclass(frozen=True)
class Autoscaling:
    """Serve's autoscaling settings for the speech replicas (see the README, "Scaling out").

    ``target_ongoing_requests``: requests in flight (decoding or queued in the engine) per replica that the
    autoscaler aims for; None means the replicas' ``max_batch``, i.e. add a replica when the batches are
    full and requests start to queue. ``upscale_delay_s`` / ``downscale_delay_s``: how long the load must
    stay above / below target before a replica is added / removed (averaged over ``look_back_period_s``).
    """

    min_replicas: int = 1
    max_replicas: int = 4
    initial_replicas: int | None = None
    target_ongoing_requests: float | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError(f"Need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                             f"{self.min_replicas} and {self.max_replicas}.")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas must be from {self.min_replicas} to {self.max_replicas}, got "
                             f"{self.initial_replicas}.")
        if self.target_ongoing_requests is not None and self.target_ongoing_requests <= 0:
            raise ValueError(f"target_ongoing_requests must be > 0, got {self.target_ongoing_requests}.")
        if min(self.upscale_delay_s, self.downscale_delay_s) < 0 or self.look_back_period_s <= 0:
            raise ValueError("upscale_delay_s and downscale_delay_s must be >= 0 and look_back_period_s > 0.")

    def config(self, max_batch: int) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` for replicas of ``max_batch``."""
        config = asdict(self)
        if config["initial_replicas"] is None:
            del config["initial_replicas"]
        if config["target_ongoing_requests"] is None:
            config["target_ongoing_requests"] = float(max_batch)
        return config


def check_replica_device(device: str | None, num_gpus: float, *,
                         names: tuple[str, str] = ("device", "num_gpus")) -> None:
    """ValueError when a replica's ``device`` and the GPUs it reserves (``num_gpus``) disagree.

    Why: Ray hides every GPU from a replica that reserved none (``CUDA_VISIBLE_DEVICES`` is empty), so ``cuda``
    with 0 GPUs fails in every replica, after Ray has started; a replica sees only the GPUs it reserved,
    numbered from 0, so ``cuda:1`` with one GPU fails the same way; and GPUs reserved for a replica that runs on
    the CPU are withheld from everyone for nothing. Without a device each replica takes the best device it
    sees, which follows the GPU count. ``names``: how the caller spells the two settings in its messages (the
    CLI: ``("--device", "--replica-gpus")``).
    """
    device_name, gpus_name = names
    kind, _, index = (device or "").strip().lower().partition(":")
    if kind == "cuda" and num_gpus == 0:
        raise ValueError(f"{device_name} cuda needs {gpus_name} (the GPUs each replica reserves, e.g. 1, or 0.5 for "
                         "two replicas per GPU): Ray shows no GPU to a replica that reserved none. Set "
                         f"{gpus_name}, or use {device_name} cpu.")
    if kind == "cuda" and index.isdigit() and int(index) >= max(1, math.ceil(num_gpus)):
        raise ValueError(f"{device_name} {device} with {gpus_name} {num_gpus:g}: a replica sees only the GPUs it "
                         f"reserved, numbered from 0 (Ray picks which). Use {device_name} cuda.")
    if kind in ("cpu", "mps") and num_gpus > 0:
        raise ValueError(f"{gpus_name} {num_gpus:g} with {device_name} {kind}: the replicas would reserve GPUs "
                         f"they never use. Leave out {gpus_name}, or use {device_name} cuda.")


def deployment(settings: ReplicaSettings, *, num_replicas: int | None = None,
               autoscaling: Autoscaling | None = None, num_cpus: float | None = None, num_gpus: float = 0,
               max_queued_requests: int | None = None, graceful_shutdown_timeout_s: float = 60.0,
               name: str = DEPLOYMENT_NAME) -> Deployment:
    """The Serve deployment of :class:`SpeechReplica` (not yet bound to its settings; see :func:`build_app`).

    Args:
        settings: what each replica loads and how it serves.
        num_replicas: a fixed number of replicas; or ``autoscaling`` (not both; neither: one replica).
        num_cpus: CPUs Ray reserves per replica (default: ``settings.num_threads`` or 1).
        num_gpus: GPUs per replica (0.5: two replicas share one); must agree with ``settings.device``
            (:func:`check_replica_device`: ``"cuda"`` needs some, ``"cpu"`` none).
        max_queued_requests: requests each proxy holds while every replica is full (default: ``max_queue``;
            -1: no limit); beyond it Serve answers 503.
        graceful_shutdown_timeout_s: how long a stopping replica (downscaling, redeploying) lets its streams
            finish.
    """
    serve = import_serve()
    if num_replicas is not None and autoscaling is not None:
        raise ValueError("Give num_replicas or autoscaling, not both.")
    if num_replicas is not None and num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}.")
    if num_cpus is None:
        num_cpus = float(settings.num_threads or 1)
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus} and {num_gpus}.")
    check_replica_device(settings.device, num_gpus)
    if max_queued_requests is None:
        max_queued_requests = max(settings.max_queue, 1)
    if max_queued_requests < 1 and max_queued_requests != -1:
        raise ValueError(f"max_queued_requests must be >= 1 or -1 (no limit), got {max_queued_requests}.")
    actor_options: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        actor_options["num_gpus"] = num_gpus
    scaling: dict[str, Any] = ({"autoscaling_config": autoscaling.config(settings.max_batch)}
                               if autoscaling is not None else {"num_replicas": num_replicas or 1})
    return serve.deployment(
        serve.ingress()(SpeechReplica), name=name, ray_actor_options=actor_options,
        max_ongoing_requests=settings.max_batch + settings.max_queue, max_queued_requests=max_queued_requests,
        graceful_shutdown_timeout_s=graceful_shutdown_timeout_s, max_constructor_retry_count=3, **scaling)


def build_app(settings: ReplicaSettings, **options: Any) -> Application:
    """The Serve application: :func:`deployment` (``options`` are its keywords) bound to ``settings``.

    Without ``settings.num_threads``, each replica's torch uses as many threads as it has CPUs (``num_cpus``).
    """
    if settings.num_threads is None and options.get("num_cpus") is not None:
        settings = replace(settings, num_threads=max(1, math.floor(options["num_cpus"])))
    elif settings.num_threads is None:
        settings = replace(settings, num_threads=1)
    return deployment(settings, **options).bind(settings)


def app_builder(args: Mapping[str, Any]) -> Application:
    """The application for Ray's tools: ``serve run vallex.serving.ray_serve:app_builder key=value ...``.

    Keys: the fields of :class:`ReplicaSettings`, ``num_replicas``, ``num_cpus``, ``num_gpus``,
    ``max_queued_requests``; or ``min_replicas`` / ``max_replicas`` (and the other :class:`Autoscaling`
    fields) to autoscale.
    """
    values = dict(args)
    scaling_keys = {item.name for item in fields(Autoscaling)}
    scaling = {key: values.pop(key) for key in list(values) if key in scaling_keys}
    options: dict[str, Any] = {}
    for key, kind in (("num_replicas", int), ("num_cpus", float), ("num_gpus", float),
                      ("max_queued_requests", int)):
        if key in values:
            options[key] = kind(values.pop(key))
    if scaling:
        converted = {key: (None if value is None else int(value) if key.endswith("_replicas") else float(value))
                     for key, value in scaling.items()}
        options["autoscaling"] = Autoscaling(**converted)
    return build_app(ReplicaSettings.from_mapping(values), **options)


def init_local_ray(*, num_cpus: int | None = None, temp_dir: str | os.PathLike | None = None,
                   **options: Any) -> None:
    """Start a Ray instance on this machine alone, its own ports on 127.0.0.1 only (no dashboard).

    Ray would otherwise advertise the machine's network address (and listen there) so that other nodes can
    join; for one machine it needs none. ``temp_dir``: Ray's session folder (logs, sockets; default
    ``/tmp/ray``; keep the path short, a Unix socket path holds ~100 characters). ``options`` go to
    ``ray.init``. Serve's HTTP proxy listens where :func:`serve_http` says, whatever this does.
    """
    # Ray's own switch for a machine that is not part of a cluster (its default on macOS and Windows): the
    # node's address is 127.0.0.1. Read from the environment by every Ray process this one starts.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import_serve()
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # this process read the environment when it imported ray
    if temp_dir is not None:
        options["_temp_dir"] = os.fspath(temp_dir)
    options.setdefault("include_dashboard", False)
    ray.init(num_cpus=num_cpus, **options)


def serve_http(app: Application, *, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME,
               route_prefix: str = "/", proxy_location: str = "HeadOnly") -> str:
    """Start Serve's HTTP proxy on ``host:port`` and deploy ``app``; returns its base URL once it is ready.

    Runs on the Ray cluster this process is connected to (``ray.init``; a local one is started otherwise).
    ``proxy_location``: ``HeadOnly`` (one address: the head node's) or ``EveryNode`` (a proxy on every node,
    for a load balancer in front). The proxy settings are the cluster's: if Serve is already running there,
    its own host and port stay.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"The port must be from 1 to 65535 (Serve needs a fixed one), got {port}.")
    if proxy_location not in PROXY_LOCATIONS:
        raise ValueError(f"proxy_location must be one of {', '.join(PROXY_LOCATIONS)}, got {proxy_location!r}.")
    serve = import_serve()
    serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location)
    try:
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError as error:  # Serve says only "failed"; the replica's error is in the status
        raise DeploymentFailed(f"The Serve deployment failed: {_replica_error(serve, name) or error}") from None
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def _replica_error(serve: Any, name: str) -> str | None:
    """The exception that stopped the replicas of application ``name`` (the end of Serve's traceback)."""
    try:
        application = serve.status().applications[name]
    except Exception:  # noqa: BLE001 - only a better message is lost
        return None
    for status in application.deployments.values():
        message = status.message or ""
        lines = message.splitlines()
        for index in range(len(lines) - 1, -1, -1):
            if _EXCEPTION_LINE.match(lines[index]):
                return "\n".join(lines[index:])
        if message:
            return message
    return application.message or None


def replicas_needed(request_rate: float, per_replica_throughput: float, audio_seconds_per_request: float,
                    *, headroom: float = 0.25, min_replicas: int = 1) -> int:
    """How many replicas serve ``request_rate`` requests/s, each ~``audio_seconds_per_request`` s of speech.

    ``per_replica_throughput``: seconds of audio one replica makes per wall-clock second when its batches are
    full (measured at its ``max_batch``: ``max_batch / RTF`` with RTF the real-time factor per request at that
    batch size). ``headroom``: the fraction of each replica's capacity kept spare, so that queues stay short
    and a burst does not wait for the autoscaler (0.25: run replicas at 75 % load)::

        replicas = ceil(request_rate * audio_seconds_per_request / (per_replica_throughput * (1 - headroom)))

    e.g. 2 requests/s of 5 s each = 10 s of audio per second; replicas making 6 s/s at 75 % load -> 3.
    """
    if request_rate < 0 or audio_seconds_per_request <= 0:
        raise ValueError(f"request_rate must be >= 0 and audio_seconds_per_request > 0, got {request_rate} and "
                         f"{audio_seconds_per_request}.")
    if per_replica_throughput <= 0:
        raise ValueError(f"per_replica_throughput must be > 0 (audio seconds per second), got "
                         f"{per_replica_throughput}.")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be from 0 to below 1, got {headroom}.")
    if min_replicas < 0:
        raise ValueError(f"min_replicas must be >= 0, got {min_replicas}.")
    load = request_rate * audio_seconds_per_request  # audio seconds asked for, per wall-clock second
    capacity = per_replica_throughput * (1 - headroom)
    return max(min_replicas, math.ceil(load / capacity - 1e-9))


__all__ = ["APP_NAME", "Autoscaling", "DEPLOYMENT_NAME", "DeploymentFailed", "RayServeUnavailable",
           "ReplicaSettings", "SpeechReplica", "app_builder", "build_app", "deployment", "import_serve",
           "init_local_ray", "replicas_needed", "serve_http"]
