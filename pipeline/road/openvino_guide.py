"""The guide's transformer run by OpenVINO on the CPU, when the `openvino` package is installed.

OpenVINO's own converter (`openvino.convert_model`, no optimum: optimum-intel pins transformers and
huggingface_hub below what gistforge runs) turns the Hugging Face backbone into a CPU graph with fused
kernels; on a CPU with AVX-512 BF16 or AMX its default inference precision is bf16. sentence-transformers
keeps doing everything around the backbone (tokenising, pooling, normalising), so only the transformer's
forward pass changes. Used for `bfloat16-openvino`; any other model shape (e.g. a `StaticEmbedding`) keeps
torch.

Converting MiniLM takes ~5 s on 2 cores, more than the bf16 forward pass saves on a small task, so the
converted graph (OpenVINO IR) is kept on disk per model revision and library versions (`ir_folder`) and
later processes read it in ~0.02 s: conversion is paid once per model per machine, not per step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from pipeline.common import atomic, locks
from pipeline.common.digests import file_digests

log = logging.getLogger(__name__)

IR_CACHE_ENV = "GISTFORGE_OPENVINO_CACHE"
_IR = "model.xml"
_DIGESTS = "digests.json"  # sha256 of the graph's files, checked before a kept graph is used
_LABEL = "model.json"  # which model and libraries the graph is of (read by `gistforge gc`)
_RECIPE = "1"  # bump when `_convert` changes what it makes: older kept graphs are then converted again


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """Whether `openvino` is importable (looked up once per process)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def ir_cache_root() -> Path | None:
    """Where converted graphs are kept: `$GISTFORGE_OPENVINO_CACHE`, else `$XDG_CACHE_HOME/gistforge/openvino`
    (`~/.cache/...`); None where neither is set and there is no home folder (an arbitrary-uid container).
    Per machine rather than per home: a graph depends only on the model and the libraries."""
    if os.environ.get(IR_CACHE_ENV):
        return Path(os.environ[IR_CACHE_ENV])
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:
        return None
    return base / "gistforge" / "openvino"


def ir_folder(name: str, revision: str, root: Path | None = None) -> Path | None:
    """The converted graph of one model revision under the libraries and recipe that converted it (a new
    openvino, transformers, sentence-transformers or torch converts again rather than trusting an older
    graph); None when there is nowhere to keep it (the graph is then converted in memory)."""
    import openvino
    import sentence_transformers
    import torch
    import transformers

    root = root or ir_cache_root()
    if root is None:
        return None
    key = (f"{name}|{revision}|recipe={_RECIPE}|openvino={openvino.__version__}|transformers={transformers.__version__}"
           f"|sentence-transformers={sentence_transformers.__version__}|torch={torch.__version__}")
    return root / hashlib.sha256(key.encode()).hexdigest()[:20]


def convertible(model) -> bool:
    """A sentence-transformers model whose first module is a Hugging Face transformer."""
    first = model[0] if len(model) else None
    return type(first).__name__ == "Transformer" and hasattr(first, "model")


def _backbone(compiled, names: list[str], original):
    """A torch module standing in for the Hugging Face model inside sentence-transformers' Transformer
    module (which calls its `model` with the tokenised batch and reads `last_hidden_state`)."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = original.config

        def forward(self, **inputs):
            feed = {n: inputs[n].numpy() for n in names if inputs.get(n) is not None}
            return BaseModelOutput(last_hidden_state=torch.from_numpy(compiled(feed)[0]))

    return Backbone()


def _convert(module):
    """Trace and convert the backbone; transformers' notes about the traced config (e.g. its `loss_type`) are
    quieted for the conversion, as they say nothing about the guide's vectors."""
    import openvino as ov
    import torch
    from transformers.utils import logging as transformers_logging

    example = dict(module.tokenizer(["an example text"], return_tensors="pt"))
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with torch.no_grad():
            graph = ov.convert_model(module.model, example_input=example)
    finally:
        transformers_logging.set_verbosity(verbosity)
    log.info("guide backbone converted by OpenVINO %s", ov.__version__)
    return graph


def _read_kept(folder: Path):
    """The graph kept in `folder`, or None when there is none or it is not whole (its files do not hash to
    what was recorded when it was kept, or OpenVINO cannot read it)."""
    import openvino as ov

    if not (folder / _DIGESTS).is_file():
        return None
    try:
        if file_digests(folder, frozenset({_DIGESTS})) != json.loads((folder / _DIGESTS).read_text()):
            log.warning("the kept guide graph in %s does not match its digests; converting it again", folder)
            return None
        return ov.Core().read_model(folder / _IR)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("could not read the kept guide graph in %s (%s); converting it again", folder, exc)
        return None


def load_graph(module, folder: Path | None, label: dict | None = None):
    """The backbone's OpenVINO graph: read from `folder` when an earlier process kept it there, else converted
    and kept there for the next one. Processes converting the same model wait for one another (one converts,
    the rest read), and a graph that is not whole is converted again; a cache that cannot be written costs
    the next process a conversion, nothing more. `label`: which model it is, kept beside it for `gc`."""
    import openvino as ov

    if folder is None:
        return _convert(module)
    if (graph := _read_kept(folder)) is not None:
        return graph
    try:
        with locks.exclusive(folder.parent / ".locks" / f"{folder.name}.lock", f"the guide's OpenVINO graph {folder.name}"):
            if (graph := _read_kept(folder)) is not None:  # another process kept it while this one waited
                return graph
            graph = _convert(module)
            with atomic.atomic_dir(folder) as tmp:
                ov.save_model(graph, tmp / _IR, compress_to_fp16=False)
                (tmp / _LABEL).write_text(json.dumps(label or {}))
                (tmp / _DIGESTS).write_text(json.dumps(file_digests(tmp, frozenset({_DIGESTS}))))
    except (OSError, RuntimeError) as exc:  # ov.save_model raises RuntimeError on a full disk
        log.warning("could not keep the converted guide in %s: %s", folder, exc)
    return graph if graph is not None else _convert(module)


class OpenVINOEncoder:
    """A SentenceTransformer whose backbone runs in OpenVINO at `hint` (bf16 | f32) while it encodes.

    Compiled on the first `encode` (so that a guide loaded for a step that finds its output up to date compiles
    nothing), from the graph kept in `ir_folder` (None: converted in memory, kept nowhere); `label` names the
    model the graph is of."""

    def __init__(self, model, hint: str = "bf16", ir_folder: Path | None = None, label: dict | None = None):
        self.model, self.hint, self.ir_folder, self.label, self._backbone = model, hint, ir_folder, label, None
        self.tokenizer, self.max_seq_length = model.tokenizer, model.max_seq_length

    def _compile(self):
        import openvino as ov

        module = self.model[0]
        graph = load_graph(module, self.ir_folder, self.label)
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": self.hint})
        log.debug("guide backbone compiled by OpenVINO %s at %s", ov.__version__, self.hint)
        return _backbone(compiled, [i.any_name for i in graph.inputs], module.model)

    def encode(self, sentences: list[str], **kwargs):
        import numpy as np

        if self._backbone is None:
            self._backbone = self._compile()
        module = self.model[0]  # sentence-transformers' Transformer calls its `model` attribute
        original, module.model = module.model, self._backbone
        try:
            out = self.model.encode(sentences, **kwargs)
        finally:
            module.model = original
        return np.asarray(out, dtype=np.float32)
