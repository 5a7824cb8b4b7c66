"""Model files and twin files: safetensors tensors with JSON in the header.

A *model file* holds a whole :class:`LearnerModel` (spec in the header, every parameter); the
twin store keeps each population rule in one. A *twin file* holds one animal's
:class:`TwinParams` (``w0``, ``log_rate``, the reference of the rule they apply to) and its end
state, a few hundred bytes; an *ensemble file* holds several such components of one animal
(each naming its rule), their labels and mixture weights. Neither ever holds pickled objects: tensors are stored by
safetensors and everything else as JSON strings in the header, so loading a file from elsewhere
runs no code. Both are written atomically (temp file in the same folder, then rename).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from twin.persist.atomic import atomic_write
from twin.errors import ModelFileError, UnknownRuleError
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinParams
from twin.models.state import TwinState

FORMAT_VERSION = "1"
MODEL_FORMAT = "learning-twins/model"
"""Header ``format`` of a model file."""
TWIN_FORMAT = "learning-twins/twin"
"""Header ``format`` of a twin file."""


@dataclass(frozen=True)
class StoredModel:
    """A model read back from a file.

    Attributes:
        model: the learner, in eval mode, without gradients.
        metadata: free-form JSON metadata saved with it (fit settings, metrics, data hash...).
        state: the twin's end-of-last-session state, when one was saved.
    """

    model: LearnerModel
    metadata: dict[str, object] = field(default_factory=dict)
    state: TwinState | None = None


def save_model(
    model: LearnerModel, path: str | Path, metadata: dict[str, object] | None = None, state: TwinState | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically (temp file in the same folder, then rename).

    Args:
        model: the learner.
        path: target ``.safetensors`` file.
        metadata: JSON-serialisable extras.
        state: optional end-of-session state, stored as ``state.w``/``state.h`` tensors.

    Returns:
        The path written.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "spec": json.dumps(model.spec.to_dict()), "metadata": json.dumps(metadata or {})}
    return _write(Path(path), tensors, header, state)


def _write(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str], state: TwinState | None) -> Path:
    """Write ``tensors`` (and ``state``'s) with ``header`` to ``path`` atomically."""
    if state is not None:
        tensors.update(state.tensors())
        header["state"] = json.dumps({"through_session": state.through_session, "phase": state.phase})
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_model(path: str | Path) -> StoredModel:
    """Read a model file written by :func:`save_model`.

    Raises:
        ModelFileError: missing file, not a model file, unknown rule, or tensors that do not fit
            the spec.
    """
    path = Path(path)
    header, tensors = read_header_and_tensors(path)
    if header.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a learning-twins model file (header format {header.get('format')!r})")
    try:
        spec = ModelSpec.from_dict(json.loads(header["spec"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except UnknownRuleError as exc:  # the spec resolves its rule's config type
        raise ModelFileError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad model spec in header ({exc})") from None
    try:
        model = LearnerModel(spec)
    except UnknownRuleError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    state = _pop_state(path, header, tensors)
    if state is not None:
        check_state(path, state, model)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the spec: {exc}") from None
    model.eval().requires_grad_(False)
    return StoredModel(model=model, metadata=metadata, state=state)


def file_format(path: str | Path) -> str | None:
    """The header ``format`` of a file (:data:`MODEL_FORMAT`, :data:`TWIN_FORMAT`...), read
    without its tensors; None when the file is not a readable safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError):
        return None


def read_header_and_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The JSON header and the tensors of a safetensors file.

    Raises:
        ModelFileError: missing or unreadable file.
    """
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    return header, tensors


def _pop_state(path: Path, header: dict[str, str], tensors: dict[str, torch.Tensor]) -> TwinState | None:
    """The end state stored in a file (its tensors taken out of ``tensors``), or None."""
    if "state" not in header:
        return None
    try:
        info = json.loads(header["state"])
        sw, sh = tensors.pop("state.w"), tensors.pop("state.h")
        return TwinState(w=sw, h=sh, through_session=int(info["through_session"]), phase=int(info.get("phase", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad twin state ({exc})") from None


def check_state(path: Path, state: TwinState, model: LearnerModel) -> None:
    """Raise :class:`ModelFileError` unless ``state``'s shapes fit ``model``."""
    if state.w.shape != (model.n_weights,) or state.h.shape != (model.rule.state_size,):
        raise ModelFileError(
            f"{path}: twin state shapes {tuple(state.w.shape)}, {tuple(state.h.shape)} do not fit the spec "
            f"({model.n_weights}, {model.rule.state_size})"
        )


@dataclass(frozen=True)
class StoredTwinParams:
    """A twin file read back.

    Attributes:
        params: the animal's parameters (``params.rule`` names the rule they apply to).
        metadata: free-form JSON metadata saved with them.
        state: the twin's end-of-last-session state, when one was saved (shapes checked against
            the rule once it is loaded, :func:`check_state`).
    """

    params: TwinParams
    metadata: dict[str, object] = field(default_factory=dict)
    state: TwinState | None = None


def save_twin_params(params: TwinParams, path: str | Path, metadata: dict[str, object] | None = None, state: TwinState | None = None) -> Path:
    """Write one animal's parameters to ``path`` atomically; the other arguments and the result
    are those of :func:`save_model`."""
    header = {"format": TWIN_FORMAT, "format_version": FORMAT_VERSION, "rule": params.rule, "metadata": json.dumps(metadata or {})}
    return _write(Path(path), params.tensors(), header, state)


def load_twin_params(path: str | Path) -> StoredTwinParams:
    """Read a twin file written by :func:`save_twin_params`.

    Raises:
        ModelFileError: missing file, not a twin file, or bad tensors.
    """
    path = Path(path)
    header, tensors = read_header_and_tensors(path)
    if header.get("format") != TWIN_FORMAT:
        raise ModelFileError(f"{path}: not a learning-twins twin file (header format {header.get('format')!r})")
    state = _pop_state(path, header, tensors)
    try:
        params = TwinParams(tensors.pop("twin.w0"), tensors.pop("twin.log_rate"), str(header["rule"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad twin parameters ({exc})") from None
    if tensors:
        raise ModelFileError(f"{path}: unexpected tensors in a twin file: {sorted(tensors)}")
    return StoredTwinParams(params=params, metadata=metadata, state=state)


ENSEMBLE_FORMAT = "learning-twins/ensemble"
"""Header ``format`` of an ensemble twin file."""


@dataclass(frozen=True)
class StoredEnsemble:
    """An ensemble twin file read back: each component's parameters (naming its rule) and state,
    the labels and the weights.

    Attributes:
        params: ``M`` components' parameters.
        weights: ``[M]`` float64 mixture weights.
        labels: ``M`` component names.
        states: ``M`` end states, or None when none was saved.
        metadata: free-form JSON metadata saved with them.
    """

    params: tuple[TwinParams, ...]
    weights: torch.Tensor
    labels: tuple[str, ...]
    states: tuple[TwinState, ...] | None
    metadata: dict[str, object] = field(default_factory=dict)


def save_ensemble(
    params: Sequence[TwinParams],
    weights: torch.Tensor,
    labels: Sequence[str],
    path: str | Path,
    states: Sequence[TwinState] | None = None,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Write an ensemble twin (``M`` components' parameters, weights, labels, optional end
    states) to ``path`` atomically. Component ``i``'s tensors are ``c{i}.twin.*`` and
    ``c{i}.state.*``; the rule references, labels and weights are JSON in the header."""
    if not (len(params) == len(labels) == int(weights.numel())) or (states is not None and len(states) != len(params)):
        raise ValueError("an ensemble file needs one weight, label (and state) per component")
    tensors: dict[str, torch.Tensor] = {}
    comps = []
    for i, p in enumerate(params):
        tensors.update({f"c{i}.{k}": v for k, v in p.tensors().items()})
        comps.append({"rule": p.rule, "label": str(labels[i]), "weight": float(weights.reshape(-1)[i])})
    header = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "components": json.dumps(comps), "metadata": json.dumps(metadata or {})}
    if states is not None:
        for i, st in enumerate(states):
            tensors.update({f"c{i}.{k}": v for k, v in st.tensors().items()})
        header["states"] = json.dumps([{"through_session": st.through_session, "phase": st.phase} for st in states])
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def load_ensemble(path: str | Path) -> StoredEnsemble:
    """Read an ensemble twin file written by :func:`save_ensemble`.

    Raises:
        ModelFileError: missing file, not an ensemble file, or bad tensors or header.
    """
    path = Path(path)
    header, tensors = read_header_and_tensors(path)
    if header.get("format") != ENSEMBLE_FORMAT:
        raise ModelFileError(f"{path}: not a learning-twins ensemble file (header format {header.get('format')!r})")
    try:
        comps = json.loads(header["components"])
        params = tuple(TwinParams(tensors.pop(f"c{i}.twin.w0"), tensors.pop(f"c{i}.twin.log_rate"), str(c["rule"])) for i, c in enumerate(comps))
        weights = torch.tensor([float(c["weight"]) for c in comps], dtype=torch.float64)
        labels = tuple(str(c["label"]) for c in comps)
        states = None
        if "states" in header:
            info = json.loads(header["states"])
            if len(info) != len(comps):
                raise ValueError(f"{len(info)} states for {len(comps)} components")
            states = tuple(
                TwinState(w=tensors.pop(f"c{i}.state.w"), h=tensors.pop(f"c{i}.state.h"), through_session=int(s["through_session"]), phase=int(s.get("phase", 0)))
                for i, s in enumerate(info)
            )
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad ensemble twin ({exc})") from None
    if not comps:
        raise ModelFileError(f"{path}: an ensemble file without components")
    if tensors:
        raise ModelFileError(f"{path}: unexpected tensors in an ensemble file: {sorted(tensors)}")
    return StoredEnsemble(params, weights, labels, states, metadata)
