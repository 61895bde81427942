"""TokenBook: the paper's weighted prototype form, not one linear probe."""

import torch
import torch.nn.functional as F

from guidino.tokenbook import TokenBook


def _xor_tokens(n=256, dim=16, seed=0):
    """Foreground tokens lie near +e0 or -e0, background near +e1 or -e1 (not linearly separable on the sphere)."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.eye(dim)
    centres = torch.stack([axes[0], -axes[0], axes[1], -axes[1]])
    which = torch.randint(0, 4, (n,), generator=g)
    tokens = centres[which] + 0.15 * torch.randn(n, dim, generator=g)
    labels = (which < 2).float()
    return tokens.T.reshape(1, dim, 16, n // 16), labels.reshape(1, 1, 16, n // 16)


def test_guide_shape_and_range():
    book = TokenBook(embed_dim=32, num_prototypes=8)
    logits = book(torch.randn(2, 32, 5, 7))
    assert logits.shape == (2, 1, 5, 7)
    guide = torch.sigmoid(logits)
    assert guide.min() >= 0 and guide.max() <= 1
    assert guide.std() > 1e-3, "a fresh TokenBook must not start as a constant map"


def test_learns_what_a_linear_probe_cannot():
    tokens, labels = _xor_tokens()
    book = TokenBook(embed_dim=16, num_prototypes=8, seed=1)
    optimizer = torch.optim.Adam(book.parameters(), lr=5e-2)
    for _ in range(300):
        loss = F.binary_cross_entropy_with_logits(book(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = ((book(tokens) > 0).float() == labels).float().mean()
    assert accuracy > 0.95

    # The collapsed form (one linear function of the normalised token) cannot exceed chance by much here.
    probe = torch.nn.Linear(16, 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=5e-2)
    flat = F.normalize(tokens, dim=1).permute(0, 2, 3, 1).reshape(-1, 16)
    for _ in range(300):
        loss = F.binary_cross_entropy_with_logits(probe(flat)[:, 0], labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ((probe(flat)[:, 0] > 0).float() == labels.reshape(-1)).float().mean() < 0.8


def test_initialize_from_examples_separates_foreground():
    tokens, labels = _xor_tokens(seed=2)
    book = TokenBook(embed_dim=16, num_prototypes=8)
    book.initialize_from(tokens, labels)
    guide = torch.sigmoid(book(tokens))
    assert guide[labels > 0.5].mean() > 0.75
    assert guide[labels < 0.5].mean() < 0.25
