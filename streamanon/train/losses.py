"""Training losses of the anonymizing generator, and why each one is there.

* **Adversarial: non-saturating logistic loss with lazy R1** (Mescheder et al. 2018; StyleGAN2).
  R1 penalizes the discriminator's gradient on real data only, which is what makes the plain
  logistic GAN converge without spectral norm or a Wasserstein critic; "lazy" means it is
  computed every few steps with its weight scaled up, at the same effect and a fraction of the
  cost. The discriminator sees the mask and the landmark heatmaps, so it also judges whether
  the face follows the requested pose/expression and blends at the mask border.
* **Landmark consistency** (optional): a small heatmap/soft-argmax regressor is trained on real
  crops; on generated crops its prediction must match the conditioning landmarks. That keeps
  expression and gaze (mouth opening, eye lids) without looking at the original pixels.
* **Context reconstruction** (auxiliary): L1 between the *raw* generator output and the input
  *outside* the mask. The composed output copies the context anyway, so this loss cannot
  change what is shown there; it gives the decoder a dense signal from step one that teaches it
  to carry the context's colour and lighting through the U-Net, which the face inside the mask
  then has to match.
* **Latent diversity** (mode seeking, Mao et al. 2019, capped): for the same conditions, two
  latents must give different faces inside the mask. Conditional GANs tend to ignore their
  latent; without this, different tracks could receive the same fake identity.

Deliberately absent: **any loss inside the mask that compares the output to the original face**
(pixel L1, perceptual/VGG, identity embedding). The generator never sees that face, so such a
loss could only pull every output toward the average face of the data set, lowering diversity,
and an identity loss would push toward the person we are hiding. Realism inside the mask comes
from the discriminator alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..generate.condition import binary_mask


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: -log D(real) - log(1 - D(fake)), as softplus for stability."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: -log D(fake) (non-saturating)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||d D(real) / d real||^2 (``real_images`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def context_loss(raw: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 between raw output and input over the pixels outside the face region."""
    keep = 1.0 - binary_mask(mask.float())
    diff = (raw.float() - real.float()).abs() * keep
    return diff.sum() / (keep.sum() * raw.shape[1]).clamp(min=1.0)


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """Mean L1 distance between landmark sets (B, 68, 2), in units of the crop size."""
    return (predicted.float() - target.float()).abs().mean() / float(size)


def diversity_loss(
    fake_a: torch.Tensor,
    fake_b: torch.Tensor,
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    mask: torch.Tensor,
    cap: float = 0.5,
) -> torch.Tensor:
    """Negative, capped ratio of image distance (inside the mask) to latent distance.

    Minimizing it spreads outputs of different latents apart; the cap stops the generator from
    buying diversity with noise once faces already differ enough.
    """
    hard = binary_mask(mask.float())
    area = (hard.sum(dim=(1, 2, 3)) * fake_a.shape[1]).clamp(min=1.0)
    image_dist = ((fake_a.float() - fake_b.float()).abs() * hard).sum(dim=(1, 2, 3)) / area
    latent_dist = (z_a.float() - z_b.float()).abs().mean(dim=1).clamp(min=1e-6)
    return -(image_dist / latent_dist).clamp(max=cap).mean()
