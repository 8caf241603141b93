"""The CNN to ONNX, with sera's metadata, and the check that onnxruntime computes what torch did."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from sera.model import INPUT_NAME, OUTPUT_NAME, ModelInfo
from sera.shipped import record
from sera.training.learners.cnn.fit import predict
from sera.training.learners.cnn.net import EmotionNet
from sera.training.protocol import OPSET


def export_onnx(model: EmotionNet, info: ModelInfo, path: Path) -> None:
    """ONNX with a dynamic batch axis and sera's metadata (features, labels, temperature)."""
    dummy = torch.zeros(1, info.features.n_mels, info.features.window_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )  # fmt: skip
    graph = onnx.load(str(path))
    for key, value in info.metadata().items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "sera"
    onnx.save(graph, str(path))
    record(path)  # its sha256 beside it: serving refuses the file if it ever changes


def parity(model: EmotionNet, onnx_path: Path, mel: np.ndarray) -> float:
    """Largest absolute difference between torch's and onnxruntime's logits on the same windows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run([OUTPUT_NAME], {INPUT_NAME: mel.astype(np.float32)})[0]
    return float(np.abs(ours - predict(model, mel)).max())
