"""dlib's face recognition ResNet in PyTorch, with weights read straight from dlib's .dat file.

dlib-bin is built without BLAS, so ``FaceEmbedder`` spends ~115-135 ms per face on a
small CPU. This module runs the same network (``dlib_face_recognition_resnet_model_v1.dat``)
through PyTorch: the weights are parsed from dlib's own binary serialization at load time
(no converted copy is shipped, nothing is downloaded) and the descriptors match dlib's to
about 1e-6.

The network is ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

a 29-conv ResNet on 150x150 chips. Points of dlib's semantics it reproduces:

* input: ``(pixel - channel mean) / 256`` with the means stored in the file;
* a conv or pool with stride != 1 defaults to padding 0 (stride 1: half the kernel), and
  its output size is ``1 + (in + 2 * pad - k) // stride``; the paddings are read from the
  file, not assumed;
* ``add_prev`` adds tensors of different shapes by zero-padding both to the largest
  channels/rows/cols, aligned at index 0. The down-sampling blocks rely on it: 32 -> 64
  channels at 35 -> 17 px, and 8 -> 3 px (conv branch) vs 8 -> 4 px (2x2 avg-pool
  shortcut), so the last two stages' conv branch only covers the top-left of the sum;
* ``affine`` is the inference form of batch norm (per-channel ``x * gamma + beta``); it is
  folded into the preceding conv's weights here;
* ``loss_metric`` outputs the fc layer's raw 128-D vector (no normalisation).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..gpu import upload
from ..models import resolve_model
from .dlib_serial import DlibFormatError, DlibReader
from .embed import CHIP_SIZE, face_chips

DESCRIPTOR_SIZE = 128

# ---------------------------------------------------------------------------------------------
# Layer nodes of the network, outermost (loss) first, as dlib nests and serializes them.
# ("con", filters, kernel, stride), ("pool", kind, kernel, stride) with kernel 0 meaning the
# whole input (avg_pool_everything), ("tag",) / ("skip",) wrappers without parameters.


def _ares(n: int) -> list[tuple]:
    # relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<SUBNET>>>>>>>>>
    return [("relu",), ("add_prev",), ("affine",), ("con", n, 3, 1), ("relu",), ("affine",), ("con", n, 3, 1), ("tag",)]


def _ares_down(n: int) -> list[tuple]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [("relu",), ("add_prev",), ("pool", "avg", 2, 2), ("skip",), ("tag",),
            ("affine",), ("con", n, 3, 1), ("relu",), ("affine",), ("con", n, 3, 2), ("tag",)]  # fmt: skip


def _architecture() -> list[tuple]:
    nodes: list[tuple] = [("loss",), ("fc", DESCRIPTOR_SIZE), ("pool", "avg", 0, 1)]
    nodes += _ares_down(256)  # alevel0
    nodes += _ares(256) + _ares(256) + _ares_down(256)  # alevel1
    nodes += _ares(128) + _ares(128) + _ares_down(128)  # alevel2
    nodes += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # alevel3
    nodes += _ares(32) + _ares(32) + _ares(32)  # alevel4
    nodes += [("pool", "max", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)]  # stem; input below it
    return nodes


@dataclass
class DlibLayer:
    """One computational layer read from the file, in forward (input-to-output) order."""

    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"
    weight: np.ndarray | None = None  # con: (out, in, kh, kw); fc: (in, out); affine: gamma (k,)
    bias: np.ndarray | None = None  # con: (out,); affine: beta (k,)
    kernel: tuple[int, int] = (0, 0)  # (rows, cols); 0 = the whole input (avg_pool_everything)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


@dataclass
class DlibFaceResNetWeights:
    """Everything the forward pass needs from the .dat file."""

    channel_means: np.ndarray  # (3,) float32, RGB means subtracted before the /256
    layers: list[DlibLayer] = field(default_factory=list)  # forward order


def _read_con(r: DlibReader, node: tuple) -> DlibLayer:
    _, filters, kernel, stride = node
    name = r.string()
    if name != "con_4":
        raise DlibFormatError(f"conv layer serialized as '{name}' (expected 'con_4')")
    params = r.tensor().reshape(-1)
    num_filters, nr, nc = r.int64(), r.int64(), r.int64()
    stride_y, stride_x, pad_y, pad_x = r.int32(), r.int32(), r.int32(), r.int32()
    f_shape, b_shape = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers, training only
        r.real()
    if (num_filters, nr, nc, stride_y, stride_x) != (filters, kernel, kernel, stride, stride):
        raise DlibFormatError(
            f"conv {num_filters} filters {nr}x{nc} stride {stride_y},{stride_x} "
            f"(expected {filters} filters {kernel}x{kernel} stride {stride})"
        )
    if not (0 <= pad_y < nr and 0 <= pad_x < nc):
        raise DlibFormatError(f"conv padding {pad_y},{pad_x} for a {nr}x{nc} kernel")
    n_weights = int(np.prod(f_shape))
    if f_shape[0] != num_filters or f_shape[2:] != (nr, nc) or b_shape != (1, num_filters, 1, 1):
        raise DlibFormatError(f"conv filter/bias shapes {f_shape} / {b_shape}")
    if params.size != n_weights + num_filters:
        raise DlibFormatError(f"conv has {params.size} parameters, expected {n_weights + num_filters}")
    return DlibLayer(
        "con",
        weight=params[:n_weights].reshape(f_shape),  # dlib's filter layout is torch's (out, in, kh, kw)
        bias=params[n_weights:].copy(),
        kernel=(nr, nc),
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
    )


def _read_affine(r: DlibReader) -> DlibLayer:
    name = r.string()
    if name in ("bn_con2", "bn_fc2"):
        raise DlibFormatError(f"'{name}' (a training-mode batch norm) where 'affine_' was expected")
    if name != "affine_":
        raise DlibFormatError(f"affine layer serialized as '{name}'")
    params = r.tensor().reshape(-1)
    g_shape, b_shape = r.alias_tensor(), r.alias_tensor()
    mode = r.int32()
    # CONV_MODE (0): one gamma/beta per channel. FC_MODE would scale each pixel separately,
    # which this network never uses.
    if mode != 0 or g_shape != b_shape or g_shape[0] != 1 or g_shape[2:] != (1, 1):
        raise DlibFormatError(f"affine layer in mode {mode} with gamma shape {g_shape} (expected per-channel)")
    k = g_shape[1]
    if params.size != 2 * k:
        raise DlibFormatError(f"affine has {params.size} parameters, expected {2 * k}")
    return DlibLayer("affine", weight=params[:k].copy(), bias=params[k:].copy())


def _read_pool(r: DlibReader, node: tuple) -> DlibLayer:
    _, kind, kernel, stride = node
    name = r.string()
    if name != f"{kind}_pool_2":
        raise DlibFormatError(f"pooling layer serialized as '{name}' (expected '{kind}_pool_2')")
    nr, nc, stride_y, stride_x = r.int64(), r.int64(), r.int32(), r.int32()
    pad_y, pad_x = r.int32(), r.int32()
    if (nr, nc, stride_y, stride_x) != (kernel, kernel, stride, stride):
        raise DlibFormatError(
            f"{kind} pool {nr}x{nc} stride {stride_y},{stride_x} (expected {kernel}x{kernel} stride {stride})"
        )
    if not (0 <= pad_y < max(nr, 1) and 0 <= pad_x < max(nc, 1)):
        raise DlibFormatError(f"{kind} pool padding {pad_y},{pad_x} for a {nr}x{nc} window")
    return DlibLayer(f"{kind}_pool", kernel=(nr, nc), stride=(stride_y, stride_x), padding=(pad_y, pad_x))


def _read_fc(r: DlibReader, node: tuple) -> DlibLayer:
    name = r.string()
    if name != "fc_2":
        raise DlibFormatError(f"fc layer serialized as '{name}' (expected 'fc_2')")
    num_outputs, num_inputs = r.uint64(), r.uint64()
    params = r.tensor().reshape(-1)
    w_shape = r.alias_tensor()
    r.alias_tensor()  # biases: empty for fc_no_bias
    bias_mode = r.int32()
    for _ in range(4):
        r.real()
    if num_outputs != node[1] or bias_mode != 1:  # FC_NO_BIAS
        raise DlibFormatError(f"fc layer with {num_outputs} outputs, bias mode {bias_mode} (expected {node[1]}, no bias)")
    if w_shape != (num_inputs, num_outputs, 1, 1) or params.size != num_inputs * num_outputs:
        raise DlibFormatError(f"fc weight shape {w_shape} with {params.size} parameters")
    # dlib computes output = input (N, in) @ W (in, out)
    return DlibLayer("fc", weight=params.reshape(num_inputs, num_outputs))


def _read_details(r: DlibReader, node: tuple) -> DlibLayer:
    kind = node[0]
    if kind == "con":
        return _read_con(r, node)
    if kind == "affine":
        return _read_affine(r)
    if kind == "pool":
        return _read_pool(r, node)
    if kind == "fc":
        return _read_fc(r, node)
    name = r.string()
    expected = {"relu": "relu_", "add_prev": "add_prev_"}[kind]
    if name != expected:
        raise DlibFormatError(f"'{name}' where '{expected}' was expected")
    return DlibLayer(kind)


def _skip_layer_state(r: DlibReader, version: int, input_layer: bool) -> None:
    # add_layer's bookkeeping after the layer details: three flags and cached tensors
    # (gradients, last outputs), meaningless for inference but in the stream.
    for _ in range(3):
        r.boolean()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if input_layer:
        r.tensor()  # grad_final
        if version >= 3:
            r.uint64()  # sample expansion factor
    elif version >= 2:
        r.tensor()  # params_grad


def parse_dlib_face_resnet(data: bytes) -> DlibFaceResNetWeights:
    """Parse the bytes of ``dlib_face_recognition_resnet_model_v1.dat``.

    Raises ``DlibFormatError`` when the stream is not exactly that network.
    """
    r = DlibReader(data)
    nodes = _architecture()
    versions: list[int] = []
    # dlib writes each wrapper's version, then its subnetwork, then its own details: so all
    # versions come first (outermost to innermost), then the input layer, then the layer
    # details from the innermost outwards.
    for i, node in enumerate(nodes):
        kind = node[0]
        if kind == "loss":
            r.version((1,), "add_loss_layer")
            name = r.string()
            if name == "loss_metric_2":
                r.real(), r.real()  # margin, distance threshold: training only
            elif name != "loss_metric_":
                raise DlibFormatError(f"loss layer '{name}' (expected loss_metric)")
            versions.append(1)
        elif kind in ("tag", "skip"):
            versions.append(r.version((1,), f"add_{kind}_layer"))
        elif i == len(nodes) - 1:  # the stem conv: add_layer specialised for an input layer
            versions.append(r.version((2, 3), "add_layer (input)"))
        else:
            versions.append(r.version((1, 2), "add_layer"))

    name = r.string()
    if name != "input_rgb_image_sized":
        raise DlibFormatError(f"input layer '{name}' (expected 'input_rgb_image_sized')")
    means = np.array([r.real() for _ in range(3)], np.float32)  # float in dlib
    size = (r.uint64(), r.uint64())
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"input size {size} (expected {CHIP_SIZE}x{CHIP_SIZE})")

    weights = DlibFaceResNetWeights(channel_means=means)
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if node[0] in ("loss", "tag", "skip"):
            continue
        weights.layers.append(_read_details(r, node))
        _skip_layer_state(r, versions[i], input_layer=i == len(nodes) - 1)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} unexpected bytes after the network")
    return weights


def load_dlib_face_resnet(path: str | os.PathLike) -> DlibFaceResNetWeights:
    """Read and parse a dlib face ResNet file; ``UserError`` (one line) when it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read dlib face recognition model {path}: {exc.strerror or exc}") from None
    try:
        return parse_dlib_face_resnet(data)
    except DlibFormatError as exc:
        raise UserError(
            f"{path} is not dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat): {exc}"
        ) from None


# ---------------------------------------------------------------------------------------------
# the network


def _conv_with_affine(con: DlibLayer, affine: DlibLayer) -> nn.Conv2d:
    """A Conv2d computing ``affine(con(x))``: per-channel scale folded into the weights."""
    out_ch, in_ch, kh, kw = con.weight.shape
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=con.stride, padding=con.padding, bias=True)
    # Fold in float64 so the folding itself adds no rounding beyond the final cast.
    gamma = affine.weight.astype(np.float64)
    w = con.weight.astype(np.float64) * gamma[:, None, None, None]
    b = con.bias.astype(np.float64) * gamma + affine.bias.astype(np.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    return conv


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum over the largest shape, each input zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Pool(nn.Module):
    """dlib's max_pool / avg_pool: windows clipped at the border (padding never averaged in)."""

    def __init__(self, layer: DlibLayer) -> None:
        super().__init__()
        self.kind = layer.kind
        self.kernel, self.stride, self.padding = layer.kernel, layer.stride, layer.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # kernel 0 = the whole input (avg_pool_everything)
        kernel = tuple(k if k else s for k, s in zip(self.kernel, x.shape[2:]))
        if self.kind == "max_pool":
            return F.max_pool2d(x, kernel, self.stride, self.padding)
        return F.avg_pool2d(x, kernel, self.stride, self.padding, count_include_pad=False)


class _ResidualBlock(nn.Module):
    """``relu(add_prev(block(x), x or avg_pool(x)))`` of dlib's ares / ares_down."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, shortcut_pool: _Pool | None) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.shortcut_pool = shortcut_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = x if self.shortcut_pool is None else self.shortcut_pool(x)
        return F.relu(_add_zero_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face recognition ResNet: (N, 3, 150, 150) float RGB in 0..255 -> (N, 128).

    ``forward`` takes pixel values (not yet mean-subtracted); ``embed_chips`` of
    ``TorchFaceEmbedder`` is the usual entry point. Build with ``from_dlib_file``.
    """

    def __init__(self, weights: DlibFaceResNetWeights) -> None:
        super().__init__()
        layers: Iterator[DlibLayer] = iter(weights.layers)

        def take(kind: str) -> DlibLayer:
            layer = next(layers)
            assert layer.kind == kind, (layer.kind, kind)  # the parser already enforced the order
            return layer

        self.register_buffer("channel_means", torch.from_numpy(weights.channel_means.copy()).view(1, 3, 1, 1))
        con = take("con")
        self.stem_conv = _conv_with_affine(con, take("affine"))
        take("relu")
        self.stem_pool = _Pool(take("max_pool"))
        blocks = []
        # 3 x 32, then (down + 3) x 64, (down + 2) x 128, (down + 2) x 256, down x 256
        for downsample in [False] * 3 + [True] + [False] * 3 + ([True] + [False] * 2) * 2 + [True]:
            conv1 = _conv_with_affine(take("con"), take("affine"))
            take("relu")
            conv2 = _conv_with_affine(take("con"), take("affine"))
            pool = _Pool(take("avg_pool")) if downsample else None
            take("add_prev")
            take("relu")
            blocks.append(_ResidualBlock(conv1, conv2, pool))
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = _Pool(take("avg_pool"))
        fc = take("fc").weight
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))
        assert next(layers, None) is None
        self.eval()

    @classmethod
    def from_dlib_file(cls, path: str | os.PathLike) -> DlibFaceResNet:
        """Build the network from ``dlib_face_recognition_resnet_model_v1.dat``."""
        return cls(load_dlib_face_resnet(path))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Descriptors (N, 128) of RGB chips (N, 3, 150, 150), float values 0..255."""
        # dlib's input layer: (pixel - mean) / 256 in float32 (exact: 256 is a power of 2)
        x = (pixels - self.channel_means) / 256.0
        x = self.stem_pool(F.relu(self.stem_conv(x)))
        x = self.global_pool(self.blocks(x))
        return self.fc(x.flatten(1))


@contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """Full float32 convolutions and matmuls on CUDA while inside (CPU: no-op).

    cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later, which moves
    the descriptors by ~1e-3; dlib computes in float32. The previous settings are restored
    on exit. They are process-wide: one thread at a time holds them (the identity guard may
    embed on a background thread while the pipeline embeds on its own), and TF32 work of
    other threads meanwhile runs in full float32, which is only slower.
    """
    if device.type != "cuda":
        yield
        return
    with _PRECISION_LOCK:
        yield from _ieee_float32_settings()


_PRECISION_LOCK = threading.RLock()


def _ieee_float32_settings() -> Iterator[None]:
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    if hasattr(conv, "fp32_precision"):  # torch >= 2.9: per-operation precision API
        saved = conv.fp32_precision, matmul.fp32_precision
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
    else:  # older torch: the allow_tf32 flags
        saved = torch.backends.cudnn.allow_tf32, matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# drop-in for FaceEmbedder


class TorchFaceEmbedder:
    """``FaceEmbedder``'s descriptors (dlib ResNet, 128-D) computed by PyTorch.

    Same interface and, to ~1e-6, the same numbers as ``FaceEmbedder(num_jitters=0)``;
    several times faster on CPU and batched. Chips are cut by dlib itself
    (``get_face_chips``, size 150, padding 0.25: what ``compute_face_descriptor`` does),
    so only the network runs in PyTorch. Uses torch's current thread settings.

    Args:
        model_path: explicit ``dlib_face_recognition_resnet_model_v1.dat``; default from
            the model registry.
        device: torch device for the network ("cpu", "cuda", ...).
        batch_size: chips per forward pass in ``embed_chips`` (bounds memory).
    """

    def __init__(
        self, model_path: str | os.PathLike | None = None, device: str | torch.device = "cpu", batch_size: int = 32
    ) -> None:
        self.model_path = resolve_model("dlib_face_embedding", model_path)
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        # channels_last: the chips arrive as NHWC already, and oneDNN's / cuDNN's NHWC
        # convolutions are faster (measured 15-30 % on CPU) with the same float32 results.
        net = DlibFaceResNet.from_dlib_file(self.model_path)
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()

    def chips(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """The (N, 150, 150, 3) uint8 aligned chips dlib would feed its network."""
        return face_chips(image_rgb, landmarks68)

    def embed(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """The (128,) float32 descriptor of the face with these (68, 2) frame landmarks."""
        return self.embed_many(image_rgb, landmarks68)[0]

    def embed_many(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of several faces (N, 68, 2) of one frame."""
        return self.embed_chips(self.chips(image_rgb, landmarks68))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of aligned RGB chips (N, 150, 150, 3) uint8."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise UserError(f"expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 chips, got {chips.dtype} {chips.shape}")
        out = np.zeros((len(chips), DESCRIPTOR_SIZE), np.float32)
        with torch.inference_mode(), ieee_float32(self.device):
            for start in range(0, len(chips), self.batch_size):
                # Move uint8 to the device first (4x less to copy), then convert there.
                batch = upload(chips[start : start + self.batch_size], self.device)
                # NHWC memory viewed as NCHW: a channels_last tensor without a copy
                pixels = batch.permute(0, 3, 1, 2).float()
                out[start : start + len(batch)] = self.net(pixels).cpu().numpy()
        return out
