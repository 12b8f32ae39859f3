"""Exact area averages of an image over any axis-aligned square, from summed-area tables (PyTorch).

The GPU path reads face crops straight from the uploaded frame instead of warping them on the
host: each crop pixel is the frame averaged over a square around the point the crop -> frame map
sends it to. A square one pixel wide gives exactly bilinear interpolation (what ``cv2.warpAffine``
does); one crop pixel's footprint wide, an area filter (what the host path's INTER_AREA resize
before the warp is for). Both come from one summed-area table per channel: the integral of a
piecewise-constant image is bilinear on each pixel, so bilinear interpolation in the table is
exact at any real coordinate.
"""

from __future__ import annotations

import torch


class SummedArea:
    """Summed-area tables of an (H, W) or (H, W, C) image, reloadable in place.

    Args:
        height, width, channels: the image's size.
        device: where the tables live.
        table: an existing (C, (H + 1) * (W + 1)) float64 buffer to use (to share it).
    """

    def __init__(self, height: int, width: int, channels: int, device: torch.device,
                 table: torch.Tensor | None = None) -> None:  # fmt: skip
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        if table is None:
            table = torch.zeros(channels, (height + 1) * (width + 1), dtype=torch.float64, device=device)
        self.table = table
        self.size = torch.tensor([width, height], dtype=torch.float64, device=device)
        self.corner_signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64, device=device)

    def load(self, image: torch.Tensor) -> None:
        """Take an (H, W) or (H, W, C) image, written into the table buffer."""
        channels = image.reshape(self.height, self.width, -1).permute(2, 0, 1).to(torch.float64)
        grid = self.table.view(self.channels, self.height + 1, self.width + 1)
        grid[:, 1:, 1:] = channels.cumsum(1).cumsum(2)

    def means(self, points: torch.Tensor, half_side: torch.Tensor) -> torch.Tensor:
        """(..., C) float64 means over squares centred at ``points`` (..., 2) x, y (pixel centres
        at integers) with half side ``half_side`` (broadcast against ``points[..., 0]``).

        A centre off the image is moved to its nearest edge and a square is cut to the image, so
        outside reads like the nearest edge pixels (the host warp's edge replication).
        """
        points = torch.minimum(points.clamp(min=0.0), self.size - 1)
        half = half_side[..., None]
        low = torch.minimum((points - half).clamp(min=-0.5), self.size - 0.5)
        high = torch.minimum((points + half).clamp(min=-0.5), self.size - 0.5)
        # The square's integral from the table at its four corners, in one pass: + - - +.
        xs = torch.stack([high[..., 0], low[..., 0], high[..., 0], low[..., 0]], dim=-1)
        ys = torch.stack([high[..., 1], high[..., 1], low[..., 1], low[..., 1]], dim=-1)
        totals = self._integral(xs, ys) @ self.corner_signs  # (..., C)
        return totals / (high - low).prod(dim=-1)[..., None]

    def _integral(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(..., C, 4): the image integrated over [-0.5, x] x [-0.5, y] at the (..., 4) corners."""
        width = self.width
        u, v = x + 0.5, y + 0.5  # table coordinates: entry (i, j) integrates rows < i, columns < j
        j0 = torch.minimum(u.floor(), self.size[0] - 1).clamp(min=0)
        i0 = torch.minimum(v.floor(), self.size[1] - 1).clamp(min=0)
        fu, fv = (u - j0)[..., None, :], (v - i0)[..., None, :]
        index = (i0 * (width + 1) + j0).long()

        def at(offset: int) -> torch.Tensor:  # (..., C, 4)
            return self.table[:, index + offset].movedim(0, -2)

        top = at(0) * (1 - fu) + at(1) * fu
        bottom = at(width + 1) * (1 - fu) + at(width + 2) * fu
        return top * (1 - fv) + bottom * fv


# Where the host warp (faces.align.warp_image) shrinks by more than 1 / 0.8, it area-resizes first.
AREA_BELOW_SCALE = 0.8


def footprint_half_sides(to_frame: torch.Tensor) -> torch.Tensor:
    """(B,) half side, in frame pixels, of the square a crop pixel averages, for crop -> frame
    maps ``to_frame`` (B, 2, 3), chosen as the host warp filters:

    * where it warps directly (scale >= 0.8), bilinear interpolation: a square one pixel wide;
    * where it area-resizes to the crop's scale and then interpolates bilinearly, a box of the
      crop pixel's footprint f followed by a tent of the same width. A single square of side
      sqrt(2) f has the same spread (variance f^2 / 6). On HELEN faces aligned to 128 px the
      crops are 1.7 grey levels from the host's on average (2.0 with a square of side f).
    """
    m = to_frame
    footprint = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).abs().sqrt()
    area = footprint > 1 / AREA_BELOW_SCALE
    return torch.where(area, 0.5 * 2**0.5 * footprint, torch.full_like(footprint, 0.5))


def warp_on_device(frame: torch.Tensor, to_frame: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size, C) uint8 crops of ``frame`` (H, W, C) uint8 through crop -> frame maps
    ``to_frame`` (B, 2, 3): the device counterpart of ``faces.align.warp_image``."""
    height, width = frame.shape[:2]
    channels = frame.shape[2] if frame.ndim == 3 else 1
    area = SummedArea(height, width, channels, frame.device)
    area.load(frame)
    to_frame = to_frame.to(device=frame.device, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(size, device=frame.device), torch.arange(size, device=frame.device),
                            indexing="ij")  # fmt: skip
    grid = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).to(torch.float64)
    points = grid @ to_frame[:, :, :2].transpose(1, 2) + to_frame[:, None, :, 2]  # (B, S*S, 2)
    half = footprint_half_sides(to_frame)[:, None].expand(-1, points.shape[1])
    means = area.means(points, half)
    return torch.floor(means + 0.5).clamp(0, 255).to(torch.uint8).reshape(len(to_frame), size, size, channels)
