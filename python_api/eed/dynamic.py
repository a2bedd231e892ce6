"""Stage 6 of EED: the dynamic inference ensemble (spec B.1, Eqs. 20-31; IRENE / WoC).

Members run in order; after member t the running average y_t = (1/t) sum_{k<=t} softmax(h_k)
is tested per sample: it stops when the confidence c_t = (max_c y_t)^2 >= tau_c and (t >= 2)
the uncertainty u_t = KL(y_t || y_{t-1}) <= tau_u; at t = 1 only the confidence test applies
and every sample stops after the last member. The batch is compacted after every member, so a
stopped sample costs nothing more. The output is log y_{t*} per sample; gradients flow
through the members each sample actually ran (the "dynamic forward" an attack can target).
"""

import torch
from torch import nn

__all__ = ["DynamicEnsemble", "stop_rule"]


def stop_rule(
    average: torch.Tensor, previous: torch.Tensor | None, *, tau_u: float, tau_c: float
) -> torch.Tensor:
    """Per sample: c_t = (max average)^2 >= tau_c and, with a previous average, KL(average ||
    previous) <= tau_u (the rule-based q_t of the spec)."""
    stop = average.amax(dim=1).square() >= tau_c
    if previous is not None:
        kl = (average * (average.clamp_min(1e-12).log() - previous.clamp_min(1e-12).log())).sum(dim=1)
        stop = stop & (kl <= tau_u)
    return stop


class DynamicEnsemble(nn.Module):
    """Members in order with per-sample early stopping (tau_u in nats, tau_c on the squared top
    probability: the spec's defaults 0.01 and 0.5). After a forward, `members_used` [B] holds
    how many members each sample ran. dynamic=False runs every member on every sample (the
    full-team average)."""

    def __init__(self, members, *, tau_u: float = 0.01, tau_c: float = 0.5, dynamic: bool = True):
        super().__init__()
        if len(members) < 1:
            raise ValueError("members must hold at least one model")
        if not tau_u >= 0 or not 0 <= tau_c:
            raise ValueError(f"tau_u and tau_c must be >= 0, got {tau_u!r} and {tau_c!r}")
        self.members = nn.ModuleList(members)
        self.tau_u, self.tau_c, self.dynamic = float(tau_u), float(tau_c), dynamic
        self.members_used: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        last = len(self.members)
        active = torch.arange(batch, device=x.device)
        total = previous = None  # running sum of the active samples' probabilities, their last average
        output = None
        used = torch.full((batch,), last, dtype=torch.long, device=x.device)
        for t, member in enumerate(self.members, start=1):
            probs = member(x.index_select(0, active)).softmax(dim=1)
            total = probs if total is None else total + probs
            average = total / t
            if t == last:
                stop = torch.ones(len(active), dtype=torch.bool, device=x.device)
            elif not self.dynamic:
                stop = torch.zeros(len(active), dtype=torch.bool, device=x.device)
            else:
                with torch.no_grad():
                    stop = stop_rule(average, previous, tau_u=self.tau_u, tau_c=self.tau_c)
            if output is None:
                output = average.new_zeros(batch, average.shape[1])
            if bool(stop.any()):
                done = active[stop]
                output = output.index_put((done,), average[stop].clamp_min(1e-12).log())
                used[done] = t
            keep = ~stop
            active, total, previous = active[keep], total[keep], average[keep].detach()
            if active.numel() == 0:
                break
        self.members_used = used
        return output
