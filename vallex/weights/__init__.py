"""Model weights: where each file comes from, where it is kept, and how it is checked.

Three models are needed (five files). Sources, tried in order, then the name in a weights folder
(``--weights-dir``):

* VALL-E X: on Hugging Face the model repository ``Plachta/VALL-E-X`` (the original, ``vallex-checkpoint.pt``;
  reported gone since 2025-09), the author's Space ``Plachta/VALL-E-X`` and the model repository
  ``camenduru/vall-e-x`` (``epoch-10.pt``, byte-identical copies), then ``audo/vall-e-x`` (``vallex-checkpoint.pt``)
  → ``vallex-checkpoint.pt`` or ``vallex-checkpoint.safetensors`` (preferred when both are there), plus optional
  ``vallex-config.json`` (model sizes; absent means the public checkpoint's).
* EnCodec 24 kHz: ``https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th``, then the copy in the
  Hugging Face repository ``facebook/encodec`` → ``encodec_24khz-d7cc33bc.th``.
* Vocos: Hugging Face ``charactr/vocos-encodec-24khz`` at commit :data:`VOCOS_REVISION`, files ``config.yaml`` and
  ``pytorch_model.bin`` → ``vocos-encodec-24khz/config.yaml`` and ``vocos-encodec-24khz/pytorch_model.bin``.

Sources of your own are tried first: ``VALLEX_CHECKPOINT_REPO`` (``owner/name[/file][@revision]``, several
separated by commas; ``vallex download --checkpoint-repo``), ``VALLEX_VOCOS_REPO`` (``owner/name[@revision]``) and
``VALLEX_ENCODEC_URL`` (a URL or ``owner/name[/file][@revision]``); ``spaces/owner/name...`` names a Space's file
(``datasets/...`` a dataset's), as huggingface.co spells them. ``HF_ENDPOINT`` (read by huggingface_hub)
replaces the Hugging Face endpoint; ``VALLEX_HF_MIRROR`` is tried after it for each Hugging Face source.

Where files are looked for:

* the VALL-E X checkpoint: ``checkpoint`` (``--checkpoint`` or ``$VALLEX_CHECKPOINT``) if given, e.g. a
  ``vallex train`` run's ``runs/de/checkpoint-00002000.pt``, used where it is (its ``.json`` and the run's
  ``languages.json`` beside it say its size and languages: :func:`vallex.weights.checkpoint.load_model`);
  the other files are then looked for as below.
* ``weights_dir`` (``--weights-dir`` or ``$VALLEX_WEIGHTS_DIR``) if given: that folder only, in the layout
  above; nothing is downloaded into the caches. ``vallex download --weights-dir DIR`` fills such a folder.
* otherwise the standard caches: the Hugging Face hub cache (``$HF_HOME``/``$HF_HUB_CACHE``, default
  ``~/.cache/huggingface/hub``) and torch hub (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``),
  under each source's name, or wherever the download record (below) says an earlier download went; missing
  files are downloaded there with progress bars, unless offline (``HF_HUB_OFFLINE=1`` or ``VALLEX_OFFLINE=1``),
  where the lookup fails at once with one message listing every missing file.

Integrity: a downloaded file is checked before it is accepted, and a source whose file fails is skipped for the
next; your own sources are copies of the same files and are checked alike. EnCodec and Vocos's weights must have
their published SHA-256 (on every load too). The VALL-E X checkpoint is read safely, checked key by key and shape
by shape against the model, and must then have the published SHA-256 (:data:`VALLEX_CHECKPOINT`) or, for a copy
with other bytes (re-pickled elsewhere), the published tensors
(:func:`vallex.weights.checkpoint.check_published_tensors`; refused while their digest is not recorded). Its
SHA-256 is checked on download only: a weights folder may hold the ``.safetensors`` made from it, and a file you
place in a folder yourself, or give as ``checkpoint`` (a fine-tuned run), is yours: checked key by key when
loaded, never against the pin. Vocos's configuration is checked for its form. The VALL-E X sources track each
repository's ``main`` branch (:data:`TRACKED_REVISION`); the pinned SHA-256 says what they must hold. The SHA-256,
size and source of every download are recorded in ``vallex-sources.json`` in the folder that holds it (the weights
folder, or the cache's root); ``vallex download --check`` checks each file as loading does
(:func:`~vallex.weights.checks.identify`, then :func:`~vallex.weights.checks.check_form`), prints them and says
whether each file still matches its record.
A folder made by ``vallex make-random-weights`` carries a checksum file with the SHA-256 of each of the random
files it wrote, which are checked against it; the published SHA-256 wins over it, so a published file copied over a
random one is the published file (and the random ``vallex-config.json`` is not used for a checkpoint that replaced
the random one).

The modules, by idea: :mod:`~vallex.weights.sources` (the files and their sources), :mod:`~vallex.weights.environment`
(the variables above, offline), :mod:`~vallex.weights.manager` (lookup, download, verification:
:class:`WeightsManager`, :func:`resolve_weights`), :mod:`~vallex.weights.download` (one file from its sources, checked),
:mod:`~vallex.weights.checks` (SHA-256 and form), :mod:`~vallex.weights.record` (``vallex-sources.json``),
:mod:`~vallex.weights.identity` (which checkpoint is running: :func:`model_identity`),
:mod:`~vallex.weights.codec` (:func:`pretrained_codec`: EnCodec and Vocos from these files),
:mod:`~vallex.weights.checkpoint` (the VALL-E X checkpoint: safe loading, strict checks, conversion) and
:mod:`~vallex.weights.random_weights` (development only). Importing this package imports no model code (no torch).
"""
from vallex.weights.checks import CHECKSUMS_NAME, NOISE_WARNING, RandomWeightsWarning, sha256_file
from vallex.weights.codec import pretrained_codec
from vallex.weights.download import DownloadFailedError
from vallex.weights.environment import (
    CHECKPOINT_ENV,
    CHECKPOINT_REPO_ENV,
    ENCODEC_URL_ENV,
    HF_MIRROR_ENV,
    OFFLINE_ENV,
    VOCOS_REPO_ENV,
    WEIGHTS_DIR_ENV,
    default_checkpoint,
    default_weights_dir,
    is_offline,
)
from vallex.weights.identity import ModelIdentity, model_identity
from vallex.weights.manager import WeightPaths, WeightsManager, WeightsNotFoundError, resolve_weights
from vallex.weights.record import SOURCES_RECORD_NAME
from vallex.weights.sources import (
    COMPONENTS,
    ENCODEC_CHECKPOINT,
    TRACKED_REVISION,
    VALLEX_CHECKPOINT,
    VALLEX_CONFIG_NAME,
    VOCOS_CONFIG,
    VOCOS_MODEL,
    VOCOS_REVISION,
    VOCOS_SUBDIR,
    WEIGHT_FILES,
    Source,
    WeightFile,
    parse_source,
    sources_for,
)

__all__ = [
    "CHECKPOINT_ENV", "CHECKPOINT_REPO_ENV", "CHECKSUMS_NAME", "COMPONENTS", "ENCODEC_CHECKPOINT", "ENCODEC_URL_ENV",
    "HF_MIRROR_ENV", "NOISE_WARNING", "OFFLINE_ENV", "SOURCES_RECORD_NAME", "TRACKED_REVISION", "VALLEX_CHECKPOINT",
    "VALLEX_CONFIG_NAME", "VOCOS_CONFIG", "VOCOS_MODEL", "VOCOS_REPO_ENV", "VOCOS_REVISION", "VOCOS_SUBDIR",
    "WEIGHTS_DIR_ENV", "WEIGHT_FILES", "DownloadFailedError", "ModelIdentity", "RandomWeightsWarning", "Source",
    "WeightFile", "WeightPaths", "WeightsManager", "WeightsNotFoundError", "default_checkpoint", "default_weights_dir",
    "is_offline", "model_identity", "parse_source", "pretrained_codec", "resolve_weights", "sha256_file", "sources_for",
]
