"""The ONNX form of a model and the ONNX Runtime behind ``--runtime onnx``.

The graph (:func:`export_onnx`), opset :data:`OPSET`:

- input ``l``: (N, 1, H, W) float32, ``L / 100`` in [0, 1];
- output ``ab``: (N, 2, H, W) float32, ``ab / 128`` in [-1, 1];
- N, H and W are dynamic; H and W must be multiples of 16 (the dims are named ``batch``,
  ``16*h16`` and ``16*w16``). One file serves every working size and batch.

A frozen pretrained encoder (the teacher's EfficientNet-Lite0, held outside the module tree so
that it is never in our weight files) is traced into the graph like every other layer, so an
``.onnx`` file stands alone: it needs neither our weights nor the encoder's packages. The model
card (JSON) and, for a model with an encoder, the encoder's description and licence are in the
file's ``metadata_props`` (:data:`CARD_KEY`, :data:`ENCODER_KEY`, :data:`LICENCE_KEY`).

With ``Colorizer(..., runtime="onnx")`` a bundled or trained model is exported once into a cache
(``$RETINT_CACHE``, else ``$XDG_CACHE_HOME/retint``, else ``~/.cache/retint``; under ``onnx/``,
keyed by the SHA-256 of the weights and card and by the exporter's versions), or an ``.onnx``
file is taken as it is, and runs with ONNX Runtime's CPUExecutionProvider. The rest of the
Colorizer (L, resizing, padding, compositing) is the same code for both runtimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .io import atomic_path
from .models import SIZE_MULTIPLE, load_weights, model_id, resolve_model_path

OPSET = 18
INPUT, OUTPUT = "l", "ab"
PROVIDERS = ("CPUExecutionProvider",)
INSTALL_HINT = "pip install 'retint[onnx]'"
CARD_KEY, ENCODER_KEY, LICENCE_KEY = "model_card", "encoder", "encoder_licence"
QUANTIZATION_KEY = "quantization"
IO_KEY = "io"
IO_TEXT = (f"input {INPUT}: (N,1,H,W) float32, L/100 in [0,1]; output {OUTPUT}: (N,2,H,W) "
           f"float32, ab/128 in [-1,1]; N, H, W dynamic, H and W multiples of {SIZE_MULTIPLE}")
CACHE_FORMAT = 1  # bump when the exported graph changes for the same weights


class OnnxUnavailable(ImportError, ValueError):
    """An optional ONNX package is not installed (a ValueError too, so every surface reports it
    as the one-line error it reports for a bad option)."""


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`OnnxUnavailable` saying what to install."""
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxUnavailable("the ONNX runtime needs the onnxruntime package, which is not "
                              f"installed ({INSTALL_HINT})") from err
    return onnxruntime


def check_exporter() -> None:
    """The exporter's packages (onnx, and onnxscript for torch.export-based export) are
    importable, else :class:`OnnxUnavailable`."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxUnavailable(f"exporting to ONNX needs {' and '.join(missing)}, not installed "
                              f"({INSTALL_HINT})")


# ---------------------------------------------------------------- export


def onnx_metadata(card: dict[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: its card, the I/O, and for a model with a
    pretrained encoder that encoder's description and licence (its weights are in the file)."""
    props = {CARD_KEY: json.dumps(card, sort_keys=True), IO_KEY: IO_TEXT}
    encoder = card.get("backbone") or {}
    if encoder.get("name"):
        props[ENCODER_KEY] = json.dumps(encoder, sort_keys=True)
        props[LICENCE_KEY] = encoder_licence(encoder)
    return props


def encoder_licence(encoder: dict[str, Any]) -> str:
    """The licence texts shipped with the encoder's weights and code packages."""
    texts = [f"{encoder['name']}: {encoder.get('source', '')}; licence "
             f"{encoder.get('licence', 'unknown')}"]
    for package in encoder.get("packages") or {}:
        with contextlib.suppress(metadata.PackageNotFoundError, OSError):
            dist = metadata.distribution(package)
            text = next((dist.read_text(name) for name in ("LICENSE", "LICENSE.txt",
                                                          "licenses/LICENSE")
                         if dist.read_text(name)), None)
            if text:
                texts.append(f"--- {package} {dist.version} ---\n{text.strip()}")
    if len(texts) == 1 and "Apache-2.0" in texts[0]:
        texts.append("Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0")
    return "\n\n".join(texts) + "\n"


@contextlib.contextmanager
def _quiet_exporter(*names: str) -> Iterator[None]:
    """The exporter's progress lines and warnings about packages we do not use (and those of
    the loggers ``names``), silenced."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                               "onnxscript", *names)]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: nn.Module, card: dict[str, Any], dst: str | Path) -> Path:
    """Write ``model`` (float32, eval, on the CPU) to ``dst`` as ONNX (module docstring), with
    ``card`` in its metadata; atomically: ``dst`` is the old file or the whole new one."""
    check_exporter()
    model = model.float().cpu().eval()
    dim = torch.export.Dim
    shapes = {INPUT: {0: dim("batch", min=1), 2: SIZE_MULTIPLE * dim("h16", min=1),
                      3: SIZE_MULTIPLE * dim("w16", min=1)}}
    # batch 2 and a non-square size: nothing can specialise to a batch of 1 or to H == W
    example = torch.rand(2, 1, 4 * SIZE_MULTIPLE, 6 * SIZE_MULTIPLE)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=shapes, verbose=False)
    from . import __version__

    onnx_model = program.model
    onnx_model.producer_name, onnx_model.producer_version = "retint", __version__
    onnx_model.doc_string = f"retint {card.get('arch', 'model')}: {IO_TEXT}"
    onnx_model.metadata_props.update(onnx_metadata(card))
    dst = Path(dst)
    with atomic_path(dst, suffix=".onnx") as tmp:
        program.save(tmp)
    return dst


# ---------------------------------------------------------------- running


class OnnxModel:
    """An ONNX Runtime session in the place of the torch module: ``model(l)`` with ``l`` a
    (N,1,H,W) tensor returns the (N,2,H,W) ab tensor on the CPU."""

    def __init__(self, source: str | Path | bytes, threads: int | None = None) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        # no busy-waiting after a run: the compose and encode stages that follow need the cores
        # (spinning threads slowed the next full-resolution stages by a third in retint bench)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        what = source if isinstance(source, bytes) else str(source)
        self.session = ort.InferenceSession(what, options, providers=list(PROVIDERS))
        self.providers = self.session.get_providers()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, l: Tensor) -> Tensor:
        x = np.ascontiguousarray(l.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x})[0])

    def run(self, l: np.ndarray) -> np.ndarray:
        """The same on a numpy array."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(l, np.float32)})[0]

    @property
    def card(self) -> dict[str, Any]:
        """The model card in the file's metadata (plus how it was quantized, if it was)."""
        card = json.loads(self.metadata.get(CARD_KEY) or "{}")
        if QUANTIZATION_KEY in self.metadata:
            card[QUANTIZATION_KEY] = json.loads(self.metadata[QUANTIZATION_KEY])
            if card.get("name"):
                card["name"] = f"{card['name']} int8"
        return card


def cache_dir() -> Path:
    if os.environ.get("RETINT_CACHE"):
        return Path(os.environ["RETINT_CACHE"]) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retint" / "onnx"


def cache_key(weights: Path, card_text: str) -> str:
    """The weights' SHA-256, then a digest of the card and of what shapes the graph."""
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    versions = {"card": card_text, "opset": OPSET, "format": CACHE_FORMAT,
                "torch": torch.__version__}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["onnxscript"] = metadata.version("onnxscript")
    extra = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()
    return f"{digest.hexdigest()[:24]}-{extra[:12]}"


def is_onnx_file(model: str | Path) -> bool:
    return str(model).lower().endswith(".onnx")


def load_onnx(model: str | Path) -> tuple[Path, OnnxModel, dict[str, Any]]:
    """(the model's path, its ONNX Runtime model, its card) for a bundled name, a path to
    weights (exported once into :func:`cache_dir`) or an ``.onnx`` file (used as it is)."""
    import_onnxruntime()  # before any work: a missing package is the first thing said
    if is_onnx_file(model):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        runner = OnnxModel(path)
        return path, runner, runner.card
    weights = resolve_model_path(str(model))
    card_path = weights.with_name(weights.name.removesuffix(".safetensors") + ".json")
    if not weights.is_file() or not card_path.is_file():
        load_weights(weights)  # raises the usual "no such model" error
    card_text = card_path.read_text()
    stem = model_id(weights).replace("/", "-")
    cached = cache_dir() / f"{stem}-{cache_key(weights, card_text)}.onnx"
    if cached.is_file():
        with contextlib.suppress(Exception):  # unreadable: export it again below
            return weights, OnnxModel(cached), json.loads(card_text)
    module, card = load_weights(weights, "cpu")
    print(f"retint: exporting {stem} to ONNX once, into {cached}", file=sys.stderr)
    try:
        export_onnx(module, card, cached)
        return weights, OnnxModel(cached), card
    except OSError:  # no writable cache: export into a temporary file, keep it in memory
        with tempfile.TemporaryDirectory(prefix="retint-onnx-") as tmp:
            path = export_onnx(module, card, Path(tmp) / "model.onnx")
            return weights, OnnxModel(path.read_bytes()), card
