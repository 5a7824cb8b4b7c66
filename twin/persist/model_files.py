"""Model files: safetensors weights with the model spec and metadata in the header.

A model file never holds pickled objects: tensors are stored by safetensors and everything
else as JSON strings in its metadata header, so loading a file from elsewhere runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from twin.persist.atomic import atomic_write
from twin.errors import ModelFileError, UnknownRuleError
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.state import TwinState

FORMAT_VERSION = "1"


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": "learning-twins/model",
        "format_version": FORMAT_VERSION,
        "spec": json.dumps(model.spec.to_dict()),
        "metadata": json.dumps(metadata or {}),
    }
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
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if header.get("format") != "learning-twins/model":
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
    state = None
    if "state" in header:
        try:
            info = json.loads(header["state"])
            sw, sh = tensors.pop("state.w"), tensors.pop("state.h")
            state = TwinState(w=sw, h=sh, through_session=int(info["through_session"]), phase=int(info.get("phase", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: bad twin state ({exc})") from None
        if sw.shape != (model.n_weights,) or sh.shape != (model.rule.state_size,):
            raise ModelFileError(
                f"{path}: twin state shapes {tuple(sw.shape)}, {tuple(sh.shape)} do not fit the spec "
                f"({model.n_weights}, {model.rule.state_size})"
            )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the spec: {exc}") from None
    model.eval().requires_grad_(False)
    return StoredModel(model=model, metadata=metadata, state=state)
