"""Thin-plate-spline warps between landmark layouts, as pure batched tensor functions.

The appearance generator keeps faces in a shape-free frame (every face warped onto the mean
landmark layout) and renders them back onto the requested landmarks. A thin-plate spline
through the landmarks does both: it moves every control point exactly onto its partner and
bends the rest of the plane as little as possible, so eyes, brows, nose and mouth land where
the condition puts them.

Points are (B, P, 2) crop pixels, pixel centres at integer coordinates (as in
``streamanon.faces.align``). The linear solve runs in float32 whatever the caller's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..faces.align import FOREHEAD

# Fixed anchors on the crop border (in crop sides): they keep the warp close to the identity far
# from the face, so the spline cannot swing the face region's surroundings around.
_BORDER_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)


def border_anchors(size: int) -> torch.Tensor:
    """(16, 2) points evenly spaced on the border of a ``size`` px crop."""
    edge = [(u, 0.0) for u in _BORDER_STEPS] + [(u, 1.0) for u in _BORDER_STEPS]
    edge += [(0.0, v) for v in _BORDER_STEPS[1:-1]] + [(1.0, v) for v in _BORDER_STEPS[1:-1]]
    return torch.tensor(edge, dtype=torch.float32) * (size - 1)


def control_points(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """Warp control points of (B, 68, 2) landmarks: the 68 points, 10 forehead points (the
    aligner's face region) and 16 fixed border anchors -> (B, 94, 2) float32."""
    points = landmarks.float()
    up = points[:, 17:27].mean(dim=1, keepdim=True) - points[:, 8:9]  # chin -> brows, follows tilt
    forehead = points[:, 17:27] + FOREHEAD * up
    anchors = border_anchors(size).to(points.device).expand(points.shape[0], -1, -1)
    return torch.cat([points, forehead, anchors], dim=1)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, P) squared distances, computed directly: the matrix-product shortcut loses the
    precision of nearby points and rounds differently for each batch position. Two broadcast
    differences are ~2.5x faster than ``cdist``'s direct mode for 2-D points."""
    dx = a[..., :, None, 0] - b[..., None, :, 0]
    dy = a[..., :, None, 1] - b[..., None, :, 1]
    return dx * dx + dy * dy


def _radial(sq_dist: torch.Tensor) -> torch.Tensor:
    """TPS kernel U(r) = r^2 log r^2, with U(0) = 0."""
    return sq_dist * torch.log(sq_dist.clamp(min=1e-12))


def tps_fit(ctrl: torch.Tensor, values: torch.Tensor, regularization: float = 1e-4) -> torch.Tensor:
    """Spline coefficients (B, P + 3, 2) of the map sending ``ctrl`` (B, P, 2) to ``values``.

    Coordinates are scaled to unit crop sides by the caller's choice of units; ``regularization``
    relaxes exact interpolation a little (keeps the system well conditioned when points crowd).
    """
    ctrl = ctrl.float()
    b, p, _ = ctrl.shape
    kernel = _radial(_squared_distances(ctrl, ctrl))
    kernel = kernel + regularization * torch.eye(p, device=ctrl.device)
    affine = torch.cat([torch.ones(b, p, 1, device=ctrl.device), ctrl], dim=2)  # (B, P, 3)
    top = torch.cat([kernel, affine], dim=2)
    bottom = torch.cat([affine.transpose(1, 2), torch.zeros(b, 3, 3, device=ctrl.device)], dim=2)
    system = torch.cat([top, bottom], dim=1)  # (B, P + 3, P + 3)
    rhs = torch.cat([values.float(), torch.zeros(b, 3, 2, device=ctrl.device)], dim=1)
    return torch.linalg.solve(system, rhs)


def tps_apply(ctrl: torch.Tensor, coefficients: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Evaluate the spline of :func:`tps_fit` at ``points`` (B, N, 2) -> (B, N, 2)."""
    p = ctrl.shape[1]
    kernel = _radial(_squared_distances(points.float(), ctrl.float()))  # (B, N, P)
    affine = torch.cat([torch.ones_like(points[..., :1]).float(), points.float()], dim=2)  # (B, N, 3)
    return kernel @ coefficients[:, :p] + affine @ coefficients[:, p:]


def pixel_grid(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size * size, 2) pixel centres (x, y), row-major."""
    axis = torch.arange(size, device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def warp_points(
    images: torch.Tensor, source_points: torch.Tensor, target_points: torch.Tensor, lattice_step: int = 1
) -> torch.Tensor:
    """Warp ``images`` (B, C, S, S) so that what lies at ``source_points`` moves to ``target_points``.

    Both point sets are (B, P, 2) crop pixels (:func:`control_points`). Each output pixel looks up
    the spline's preimage in the source (bilinear, edge pixels repeated outside); the result has
    the input's dtype. ``lattice_step`` > 1 evaluates the spline on a lattice about that many
    pixels apart and interpolates between its nodes: evaluation is most of the cost, and the
    spline is smooth except right at crowded control points (see ``RENDER_LATTICE_STEP``).
    """
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"square images expected, got {h}x{w}")
    if lattice_step < 1:
        raise ValueError(f"lattice_step must be >= 1, got {lattice_step}")
    # The identity guard renders several candidates onto the same landmarks: solve and evaluate
    # the spline once per distinct pair of point sets. Not in a compiled graph: the number of
    # distinct sets is data-dependent there, and compiled batches are the pipeline's, one per face.
    unique = None
    if not torch.compiler.is_compiling():
        pairs = torch.cat([source_points.float().flatten(1), target_points.float().flatten(1)], dim=1)
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    if unique is not None and len(unique) < b:
        n = source_points.shape[1]
        sources, targets = unique[:, : 2 * n].view(-1, n, 2), unique[:, 2 * n :].view(-1, n, 2)
        sample_at = _sampling_grid(sources, targets, h, lattice_step)[inverse]
    else:
        sample_at = _sampling_grid(source_points, target_points, h, lattice_step)
    out = F.grid_sample(images.float(), sample_at, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(images.dtype)


def _sampling_grid(source_points: torch.Tensor, target_points: torch.Tensor, size: int, lattice_step: int = 1) -> torch.Tensor:
    """``grid_sample`` coordinates (B, S, S, 2) of the spline taking ``target`` to ``source``,
    evaluated every pixel or on a lattice ``lattice_step`` px apart and bilinearly upsampled."""
    b = source_points.shape[0]
    scale = float(size - 1)
    # Unit crop sides keep the kernel's r^2 log r^2 well scaled at every resolution.
    target = target_points.float() / scale
    coefficients = tps_fit(target, source_points.float() / scale)
    nodes = size if lattice_step == 1 else max(2, -(-(size - 1) // lattice_step) + 1)
    grid = pixel_grid(nodes, source_points.device).div(nodes - 1).expand(b, -1, -1)
    source = tps_apply(target, coefficients, grid).view(b, nodes, nodes, 2)  # unit sides
    if nodes != size:
        # Nodes sit on the first and last pixel centres, as align_corners=True maps them.
        source = F.interpolate(source.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=True)
        source = source.permute(0, 2, 3, 1)
    return source * 2.0 - 1.0  # align_corners=True: -1 and 1 are pixel centres
