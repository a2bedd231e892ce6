"""The one scoring rule of every suite and evaluation: a sample is robust at a point only if the
model is right on every one of `draws` forward passes there (the worst case over the model's
randomness; one pass suffices for a deterministic model).

`WorstCase` keeps, per sample, the most adversarial point any attack has found and its scores:
a point the model gets wrong on some draw beats one it gets right on every draw, then fewer
right draws win, then the higher cross-entropy (averaged over the draws). A sample the model
is right on at x on every draw has no point until an attack gives one, so the clean input is
never kept for a sample no attack fooled. Robustness is therefore all-or-nothing over the clean
input and every point scored: one wrong draw anywhere and the sample is not robust. A point is
scored once: an attack that returns the clean input itself (eps = 0, or no move) gets the clean
input's scores, not k more draws, so at eps = 0 robust accuracy is the clean accuracy on every draw.
A pass is right only when the label's logit is above every other class's: a tie is wrong, not
settled by argmax's lowest index (CrossMax with k = 3 ties at exactly 0 whenever 3 or more of its
predictors rank two classes top, which argmax would score for the lower-numbered class).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .arguments import check_count

DRAWS = 10  # fresh forward passes per scored point on a randomised model (worst of k)


@dataclass
class Scores:
    """Per-sample scores of one point each: [B] tensors."""

    robust: torch.Tensor  # bool: right on every draw
    correct_fraction: torch.Tensor  # the fraction of draws right
    loss: torch.Tensor  # cross-entropy averaged over the draws

    def fields(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.robust, self.correct_fraction, self.loss

    def select(self, keep: torch.Tensor) -> "Scores":
        return Scores(*(field[keep] for field in self.fields()))


def right(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] bool: the label's logit strictly above every other class's (a tie or a NaN is wrong)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    return true > logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)


@torch.no_grad()
def score(model, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> Scores:
    """Scores of the points x [B, ...] with labels y [B] over `draws` forward passes."""
    check_count("draws", draws)
    right_draws = torch.zeros(len(y), dtype=torch.int64, device=y.device)
    loss = torch.zeros(len(y), dtype=torch.float32, device=y.device)
    for _ in range(draws):
        logits = model(x)
        right_draws += right(logits, y)
        loss += F.cross_entropy(logits.float(), y, reduction="none")
    return Scores(right_draws == draws, right_draws.float() / draws, loss / draws)


class WorstCase:
    """The most adversarial point per sample of (x, y) so far, scored on `draws` passes of model
    (`clean`: the scores of x itself when already computed)."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, draws: int, clean: Scores | None = None):
        self.model, self.y, self.draws = model, y, draws
        self.clean = clean if clean is not None else score(model, x, y, draws)
        self.x_clean = x.detach()
        self.x = x.detach().clone()
        self.robust = self.clean.robust.clone()
        self.correct_fraction = self.clean.correct_fraction.clone()
        self.loss = self.clean.loss.clone()
        # right at x on every draw: x is no adversarial point, the first attack's replaces it
        self.pending = self.clean.robust.clone()

    def attackable(self) -> torch.Tensor:
        """Indices of the samples the model is still right on at some draw (what an attack that
        also lowers the mean over draws runs on; see still_robust)."""
        return (self.correct_fraction > 0).nonzero().squeeze(1)

    def still_robust(self) -> torch.Tensor:
        """Indices of the samples the model is right on at every draw at every point so far: the
        only ones a further attack can change the robust accuracy of (a sample once wrong on a
        draw is never robust again; attacking it more only lowers its mean over draws)."""
        return self.robust.nonzero().squeeze(1)

    def update(self, idx: torch.Tensor, x_adv: torch.Tensor, scores: Scores | None = None) -> None:
        """Offers the points x_adv for the samples idx; `scores` are their scores when the
        attack has already computed them with `score` (a suite), else they are scored here."""
        unmoved = (x_adv == self.x_clean[idx]).flatten(1).all(dim=1)
        clean = self.clean.select(idx)
        if scores is None:
            scores = clean if bool(unmoved.all()) else score(self.model, x_adv, self.y[idx], self.draws)
        fields = zip(clean.fields(), scores.fields(), strict=True)
        new = Scores(*(torch.where(unmoved, at_x, at_point) for at_x, at_point in fields))
        old_robust, old_fraction = self.robust[idx], self.correct_fraction[idx]
        same = (old_robust == new.robust) & (new.correct_fraction == old_fraction)
        better = (
            self.pending[idx]
            | (old_robust & ~new.robust)
            | ((old_robust == new.robust) & (new.correct_fraction < old_fraction))
            | (same & (new.loss > self.loss[idx]))
        )
        taken = idx[better]
        self.x[taken] = x_adv[better].detach().to(self.x.dtype)
        self.robust[taken] = new.robust[better]
        self.correct_fraction[taken] = new.correct_fraction[better]
        self.loss[taken] = new.loss[better]
        self.pending[taken] = False

    def scores(self) -> Scores:
        return Scores(self.robust.clone(), self.correct_fraction.clone(), self.loss.clone())
