"""The guide's transformer run by OpenVINO on the CPU, when the `openvino` package is installed.

OpenVINO's own converter (`openvino.convert_model`, no optimum: optimum-intel pins transformers and
huggingface_hub below what gistforge runs) turns the Hugging Face backbone into a CPU graph with fused
kernels; on a CPU with AVX-512 BF16 or AMX its default inference precision is bf16. sentence-transformers
keeps doing everything around the backbone (tokenising, pooling, normalising), so only the transformer's
forward pass changes. Used for `bfloat16-openvino`; any other model shape (e.g. a `StaticEmbedding`) keeps
torch.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """Whether `openvino` is importable (looked up once per process)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


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


class OpenVINOEncoder:
    """A SentenceTransformer whose backbone runs in OpenVINO at `hint` (bf16 | f32) while it encodes.

    Converted and compiled on the first `encode` (~2-3 s for MiniLM on 2 cores), so that a guide loaded for a
    step that finds its output up to date converts nothing."""

    def __init__(self, model, hint: str = "bf16"):
        self.model, self.hint, self._backbone = model, hint, None
        self.tokenizer, self.max_seq_length = model.tokenizer, model.max_seq_length

    def _compile(self):
        import openvino as ov
        import torch

        module = self.model[0]
        example = dict(module.tokenizer(["an example text"], return_tensors="pt"))
        with torch.no_grad():
            graph = ov.convert_model(module.model, example_input=example)
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": self.hint})
        log.info("guide backbone compiled by OpenVINO %s at %s", ov.__version__, self.hint)
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
