"""What the trained model is asked after training: log p(x), reconstructions, samples, codes."""

from __future__ import annotations

import torch

from ..losses import kl_per_dimension
from ..modules import VAE


@torch.no_grad()
def iwae_metrics(args, model, test_images: torch.Tensor, device: torch.device) -> dict:
    """IWAE log p(x) estimate on the first --iwae-samples test images (VAE only)."""
    if args.model != "vae" or args.iwae_k == 0:
        return {}
    model.eval()
    generator = torch.Generator(device).manual_seed(args.seed + 2)
    x = test_images[: args.iwae_samples].to(device)
    log_px = torch.cat([model.log_likelihood(chunk, args.iwae_k, generator=generator) for chunk in x.split(256)])
    return {"test_log_px_iwae": log_px.mean().item(), "iwae_k": args.iwae_k, "iwae_samples": x.shape[0]}


@torch.no_grad()
def codes(model, images: torch.Tensor) -> torch.Tensor:
    """Flat codes [N, L]: the posterior mean μ(x) of a VAE, the code of an AE."""
    out = torch.cat([_code(model, x) for x in images.split(512)])
    return out.float().reshape(out.shape[0], -1)


def _code(model, x):
    return model.encode(x)[0] if isinstance(model, VAE) else model.encode(x)


@torch.no_grad()
def generate(model, test_images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images from the model: decoded prior draws (VAE); an AE has no prior, so it decodes
    draws from a diagonal Gaussian fitted to the test codes."""
    generator = torch.Generator(test_images.device).manual_seed(seed)
    if isinstance(model, VAE):
        return model.sample(n, generator=generator)
    test_codes = model.encode(test_images).float()
    mean = test_codes.mean(dim=0)
    std = test_codes.std(dim=0) if test_codes.shape[0] > 1 else torch.ones_like(mean)
    z = mean + std * torch.randn((n, *test_codes.shape[1:]), generator=generator, device=test_codes.device)
    return model.decode(z.to(test_images.dtype))


@torch.no_grad()
def traversal(model, test_images: torch.Tensor, steps: int, max_rows: int):
    """(rows, values, value label) for a latent traversal of a flat latent.

    VAE: coordinate k of z sweeps the prior's ±2.5 standard deviations around the prior mean,
    rows ordered by the test set's mean KL in that coordinate (the most used first). AE: the
    code sweeps ±2.5 standard deviations of the test codes around their mean, rows ordered by
    that spread.
    """
    test_codes = codes(model, test_images)
    values = torch.linspace(-2.5, 2.5, steps)
    if isinstance(model, VAE):
        mu, logvar = (t.float().reshape(t.shape[0], -1) for t in model.encode(test_images))
        prior = [
            None if p is None else torch.broadcast_to(p.float(), mu.shape[1:]) for p in model.latent.prior_params()
        ]
        score = kl_per_dimension(mu, logvar, *prior).mean(dim=0)
        pm = torch.zeros_like(score) if prior[0] is None else prior[0]
        plv = torch.zeros_like(score) if prior[1] is None else prior[1]
        base, scale = pm, torch.exp(0.5 * plv)
        labels = [f"z{k + 1}  KL {score[k]:.2f}" for k in range(score.numel())]
        value_label = "z_k in prior standard deviations from the prior mean"
    else:
        base, scale = test_codes.mean(dim=0), test_codes.std(dim=0).clamp(min=1e-6)
        score = scale
        labels = [f"z{k + 1}  sd {scale[k]:.2f}" for k in range(score.numel())]
        value_label = "z_k in standard deviations of the test codes from their mean"
    order = torch.argsort(score, descending=True)[:max_rows].tolist()
    rows = []
    dtype = test_images.dtype
    for k in order:
        z = base.repeat(steps, 1)
        z[:, k] = base[k] + values.to(z.device) * scale[k]
        decoded = model.decode(z.to(dtype))
        images = model.mean(decoded) if isinstance(model, VAE) else decoded
        rows.append((labels[k], images.float().clamp(0, 1).reshape(steps, *test_images.shape[1:]).cpu()))
    return rows, values.tolist(), value_label
