"""TokenBook: learned prototypes that turn patch tokens into a guide map."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenBook(nn.Module):
    """K learned prototypes P and weights alpha; one guide logit per patch token.

    ``logit(T) = sum_k alpha_k * softmax_k(tau * cos(T, P_k)) + b`` and ``guide = sigmoid(logit)``.

    A plain weighted sum of cosine similarities would be linear in the normalised token (one
    linear probe, whatever K is). The softmax over prototypes softly assigns each token to its
    nearest prototypes, so alpha_k reads as "how much prototype k is target"; tau is learned.
    """

    def __init__(self, embed_dim, num_prototypes=16, temperature=10.0, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, embed_dim, generator=generator))
        self.alpha = nn.Parameter(torch.randn(num_prototypes, generator=generator))
        self.bias = nn.Parameter(torch.zeros(()))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def num_prototypes(self):
        return self.prototypes.shape[0]

    def assignments(self, tokens):
        """Soft assignment of each token to the prototypes: (B, K, h, w), sums to 1 over K."""
        cosine = torch.einsum("bdhw,kd->bkhw", F.normalize(tokens, dim=1), F.normalize(self.prototypes, dim=1))
        return torch.softmax(self.log_temperature.exp() * cosine, dim=1)

    def forward(self, tokens):
        """Patch tokens (B, D, h, w) -> guide logits (B, 1, h, w); ``sigmoid`` gives the guide in [0, 1]."""
        return torch.einsum("bkhw,k->bhw", self.assignments(tokens), self.alpha).unsqueeze(1) + self.bias

    @torch.no_grad()
    def initialize_from(self, tokens, foreground, seed=0):
        """Seed prototypes from example tokens (B, D, h, w) and their foreground fraction (B, 1, h, w).

        Half the prototypes are spread over the foreground tokens (alpha = +2), half over the
        background ones (alpha = -2), by farthest-point sampling in cosine distance: a few labelled
        slices then give a useful guide before any training step.
        """
        flat = F.normalize(tokens.permute(0, 2, 3, 1).reshape(-1, tokens.shape[1]).float(), dim=1)
        fg = foreground.reshape(-1).float()
        generator = torch.Generator().manual_seed(seed)
        k_fg = self.num_prototypes // 2
        chosen, alphas = [], []
        for mask, count, sign in ((fg >= 0.5, k_fg, 2.0), (fg < 0.5, self.num_prototypes - k_fg, -2.0)):
            pool = flat[mask] if mask.any() else flat
            chosen.append(_farthest_points(pool, count, generator))
            alphas.append(torch.full((count,), sign))
        self.prototypes.copy_(torch.cat(chosen).to(self.prototypes))
        self.alpha.copy_(torch.cat(alphas).to(self.alpha))
        self.bias.zero_()


def _farthest_points(points, count, generator):
    """``count`` rows of unit vectors ``points`` spread out greedily (cosine distance)."""
    index = [int(torch.randint(len(points), (1,), generator=generator))]
    distance = 1 - points @ points[index[0]]
    for _ in range(count - 1):
        index.append(int(distance.argmax()))
        distance = torch.minimum(distance, 1 - points @ points[index[-1]])
    return points[index]
