"""A constant-velocity Kalman filter on one object's bounding box (SAMURAI's motion model).

The state is 8 numbers: the box centre (cx, cy), its aspect ratio a = w / h and height h,
and their velocities. A box measured on a frame is observed directly as (cx, cy, a, h).
The noise levels scale with the box height, so the filter behaves the same at any
resolution. Everything is float64 on the CPU: the matrices are 8x8, and double precision
keeps the covariance symmetric positive definite over thousands of updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Noise per unit of box height: position and velocity (the SORT / DeepSORT values
# SAMURAI uses). The aspect ratio gets fixed, small noise of its own.
POSITION_WEIGHT = 1.0 / 20
VELOCITY_WEIGHT = 1.0 / 160
_F64 = torch.float64


@dataclass(frozen=True)
class BoxGaussian:
    """The filter's belief about one box.

    Attributes:
        mean: [8] (cx, cy, a, h, vcx, vcy, va, vh), float64.
        covariance: [8, 8] float64.
    """

    mean: torch.Tensor
    covariance: torch.Tensor

    def box_xyxy(self) -> tuple[float, float, float, float]:
        """The mean box as (x0, y0, x1, y1) floats."""
        return xyah_to_xyxy(self.mean[:4].tolist())


def xyxy_to_xyah(box: tuple[float, float, float, float]) -> list[float]:
    """(x0, y0, x1, y1) -> (cx, cy, w / h, h); a zero height counts as 1 (no division by 0)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if h == 0:
        h = 1
    return [(x0 + x1) / 2, (y0 + y1) / 2, w / h, h]


def xyah_to_xyxy(xyah: list[float]) -> tuple[float, float, float, float]:
    cx, cy, a, h = xyah
    half_w, half_h = a * h / 2, h / 2
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _motion_matrix() -> torch.Tensor:
    """x_{t+1} = x_t + v_t for each of the 4 measured quantities (one frame per step)."""
    m = torch.eye(8, dtype=_F64)
    m[:4, 4:] = torch.eye(4, dtype=_F64)
    return m


_MOTION = _motion_matrix()


def _diag_sq(values: list[float]) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=_F64) ** 2)


def initiate(box: tuple[float, float, float, float]) -> BoxGaussian:
    """A new track at a measured box (x0, y0, x1, y1), with zero velocity."""
    xyah = xyxy_to_xyah(box)
    h = xyah[3]
    mean = torch.tensor(xyah + [0.0, 0.0, 0.0, 0.0], dtype=_F64)
    # Unknown velocity: its spread is ten times the per-frame process noise.
    std = [2 * POSITION_WEIGHT * h, 2 * POSITION_WEIGHT * h, 1e-2, 2 * POSITION_WEIGHT * h,
           10 * VELOCITY_WEIGHT * h, 10 * VELOCITY_WEIGHT * h, 1e-5, 10 * VELOCITY_WEIGHT * h]
    return BoxGaussian(mean, _diag_sq(std))


def predict(belief: BoxGaussian) -> BoxGaussian:
    """Advance the belief by one frame."""
    h = float(belief.mean[3])
    std = [POSITION_WEIGHT * h, POSITION_WEIGHT * h, 1e-2, POSITION_WEIGHT * h,
           VELOCITY_WEIGHT * h, VELOCITY_WEIGHT * h, 1e-5, VELOCITY_WEIGHT * h]
    mean = _MOTION @ belief.mean
    cov = _MOTION @ belief.covariance @ _MOTION.T + _diag_sq(std)
    return BoxGaussian(mean, cov)


def update(belief: BoxGaussian, box: tuple[float, float, float, float]) -> BoxGaussian:
    """Correct the belief with a box (x0, y0, x1, y1) measured on this frame."""
    h = float(belief.mean[3])
    measured = torch.tensor(xyxy_to_xyah(box), dtype=_F64)
    # Measurement noise: the aspect ratio is measured less reliably than it moves.
    noise = _diag_sq([POSITION_WEIGHT * h, POSITION_WEIGHT * h, 1e-1, POSITION_WEIGHT * h])
    projected_cov = belief.covariance[:4, :4] + noise  # observation = first 4 states
    cross = belief.covariance[:, :4]  # [8, 4]
    chol = torch.linalg.cholesky(projected_cov)
    gain = torch.cholesky_solve(cross.T, chol).T  # [8, 4] = cross @ projected_cov^-1
    mean = belief.mean + gain @ (measured - belief.mean[:4])
    cov = belief.covariance - gain @ projected_cov @ gain.T
    return BoxGaussian(mean, cov)


# The box of an empty mask. SAMURAI also uses it to mean "no box": a candidate with this
# box (empty, or a single pixel at the origin) never overlaps the predicted one.
EMPTY_BOX = (0, 0, 0, 0)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes; 0 when ``b`` is `EMPTY_BOX`."""
    if tuple(b) == EMPTY_BOX:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else 0.0
