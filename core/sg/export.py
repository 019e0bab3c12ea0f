"""The deployable model, pure torch: a normalised image batch → (class scores, familiarity, embedding).

``ExportModel(learner, prompt_feats)`` = the learner's frozen prefix followed by its method's
:meth:`~core.sg.methods.base.Method.head_module`, so the exported graph computes exactly what
``learner.class_scores`` / ``learner.familiarity`` compute from the same normalised pixels.
:func:`export_onnx` writes it with torch's ONNX exporter (TorchScript-based, ``dynamo=False``: the
dynamo exporter needs onnxscript, which the project does not otherwise use), batch axis dynamic.
Only ONNX-exportable ops are used (conv, matmul, norm, max, …); no data-dependent control flow.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

__all__ = ["ExportModel", "export_onnx", "OUTPUT_NAMES", "INPUT_NAME", "OPSET"]

INPUT_NAME = "image"
OUTPUT_NAMES = ("scores", "familiarity", "embedding")
OPSET = 17


class ExportModel(torch.nn.Module):
    """x (B, 3, S, S) float, normalised like ``normalize_batch`` → (scores (B, N), familiarity (B,),
    embedding (B, D)). Holds the learner's model (eval mode) and the method's head for the N classes."""

    def __init__(self, learner, prompt_feats: torch.Tensor):
        super().__init__()
        self.model = learner.model
        self.head = learner.method.head_module(learner, prompt_feats)
        self.input_size = int(learner.model.input_size)

    def forward(self, x: torch.Tensor):
        return self.head(self.model.prefix(x))


def export_onnx(learner, prompt_feats: torch.Tensor, path: str | Path | None = None) -> bytes:
    """Export to ONNX on the CPU in float32; returns the model bytes (also written to ``path`` if given)."""
    learner.model.to("cpu")
    module = ExportModel(learner, prompt_feats).eval()
    size = module.input_size
    example = torch.zeros(2, 3, size, size)
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    was_training = learner.model.training
    learner.model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's eval fast path is one fused op ONNX has no symbol for; the plain path is the
    # same arithmetic in exportable ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
            torch.onnx.export(module, (example,), buf, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        learner.model.train(was_training)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
