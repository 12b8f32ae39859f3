"""CenterFace run by PyTorch, from the same ``centerface.onnx`` onnxruntime runs.

Our onnxruntime has no CUDA provider on the GPU machines, so on a GPU the detector runs here
instead: the ONNX graph is read once and executed node by node with the matching ``torch``
operations, on any device ``torch`` supports. The network uses only six operator types
(Conv, ConvTranspose, BatchNormalization, Relu, Add, Sigmoid); any other is refused when the
file is loaded, not in the middle of a video. The weights are the file's own, so the outputs
are onnxruntime's to float32 rounding (``tests/test_detect.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelUnavailable

SUPPORTED_OPS = frozenset({"Conv", "ConvTranspose", "BatchNormalization", "Relu", "Add", "Sigmoid"})


@dataclass(frozen=True)
class _Node:
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict


class CenterFaceNet(nn.Module):
    """``net(blob) -> (heatmap, log_size, offset, keypoints)`` for a (B, 3, H, W) float32 blob
    of 0-255 RGB values, H and W multiples of 32 (the ONNX model's contract)."""

    def __init__(self, nodes: list[_Node], weights: dict[str, torch.Tensor], input_name: str,
                 output_names: tuple[str, ...]) -> None:  # fmt: skip
        super().__init__()
        self.nodes = nodes
        self.input_name = input_name
        self.output_names = output_names
        # ONNX names hold dots; buffers may not.
        self._buffer_of = {name: f"w{i}" for i, name in enumerate(weights)}
        for name, tensor in weights.items():
            self.register_buffer(self._buffer_of[name], tensor)

    @classmethod
    def from_onnx(cls, path: str | Path, output_names: tuple[str, ...]) -> CenterFaceNet:
        """Read the graph and weights of ``path``; ``output_names`` in the order to return them."""
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            raise ModelUnavailable("the PyTorch CenterFace needs the 'onnx' package: pip install onnx") from None
        model = onnx.load(str(path))
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - SUPPORTED_OPS)
        if unknown:
            raise ModelUnavailable(f"{path}: operators {', '.join(unknown)} are not supported by the PyTorch CenterFace")
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        nodes = [
            _Node(n.op_type, tuple(n.input), n.output[0], {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
            for n in graph.node
        ]
        input_name = next(i.name for i in graph.input if i.name not in weights)
        return cls(nodes, weights, input_name, output_names)

    def forward(self, blob: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[str, torch.Tensor] = {self.input_name: blob}

        def value(name: str) -> torch.Tensor:
            return values[name] if name in values else getattr(self, self._buffer_of[name])

        for node in self.nodes:
            args = [value(name) for name in node.inputs if name]
            values[node.output] = _run(node, args)
        return tuple(values[name] for name in self.output_names)


def _run(node: _Node, args: list[torch.Tensor]) -> torch.Tensor:
    """One ONNX node (opset 9 semantics, as the file declares)."""
    a = node.attrs
    if node.op == "Conv":
        return F.conv2d(*args[:3] if len(args) > 2 else (*args, None), stride=tuple(a.get("strides", (1, 1))),
                        padding=_symmetric_pads(a), dilation=tuple(a.get("dilations", (1, 1))),
                        groups=a.get("group", 1))  # fmt: skip
    if node.op == "ConvTranspose":
        if a.get("output_padding") or a.get("output_shape"):
            raise ValueError("ConvTranspose with output_padding/output_shape is not supported")
        return F.conv_transpose2d(*args[:3] if len(args) > 2 else (*args, None), stride=tuple(a.get("strides", (1, 1))),
                                  padding=_symmetric_pads(a), dilation=tuple(a.get("dilations", (1, 1))),
                                  groups=a.get("group", 1))  # fmt: skip
    if node.op == "BatchNormalization":
        x, scale, bias, mean, var = args
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))
    if node.op == "Relu":
        return torch.relu(args[0])
    if node.op == "Add":
        return args[0] + args[1]
    if node.op == "Sigmoid":
        return torch.sigmoid(args[0])
    raise ValueError(f"unsupported operator {node.op}")  # from_onnx refuses these up front


def _symmetric_pads(attrs: dict) -> tuple[int, int]:
    """ONNX pads (top, left, bottom, right) as torch's symmetric (h, w) padding."""
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    if pads[:2] != pads[2:]:
        raise ValueError(f"asymmetric padding {pads} is not supported")
    return pads[0], pads[1]
