"""The noisy_conv2d measurements benchmarks/report.py adds when noisy_conv2d is selected: its
forward+backward timed in interleaved rounds (what the conv targets use), and the bytes each
variant saves for backward."""

import time

import torch
from timing import DEVICE, capped_rounds


def interleaved_conv_rows(rounds: int = 9) -> list[dict]:
    """noisy_conv2d forward+backward against plain F.conv2d and the eager reference,
    timed in interleaved rounds (each round runs every variant once, in rotating
    order) so that drift in the machine's speed hits all variants alike. The
    per-variant pytest-benchmark runs (report.run_benchmarks) time variants minutes apart; on a shared
    2-core VM their conv medians moved by up to 5x between neighbouring runs."""
    from test_noisy_weight import CONV_SHAPES, CONV_VARIANTS, _conv_case, _run

    names = ["plain_conv2d", "reference_eager", "robustkernels"]
    rows = []
    for channels in CONV_SHAPES:
        args = _conv_case(channels)
        steps = {name: _run(CONV_VARIANTS[name], args, backward=True) for name in names}
        for step in steps.values():
            step()
            step()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(capped_rounds(rounds)):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
        medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        for name in names:
            rows.append({"case": f"c{channels}", "variant": name, "median_ms": medians[name] * 1e3})
    return rows


def _saved_for_backward(fn, *inputs) -> tuple[int, int]:
    """(bytes saved for backward, bytes of those that are new allocations rather than inputs)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(saved.append, lambda t: t):
        fn(*inputs)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved if t is not None}
    inputs_at = {t.untyped_storage().data_ptr() for t in inputs}
    return sum(storages.values()), sum(size for ptr, size in storages.items() if ptr not in inputs_at)


def saved_bytes_rows() -> list[dict]:
    import torch.nn.functional as F

    import robustkernels.functional as rkF
    from robustkernels import reference

    variants = {
        "plain_conv2d": lambda x, w, a: F.conv2d(x, w, None, 1, 1),
        "reference_eager": lambda x, w, a: reference.pni_noisy_conv2d(x, w, None, a, 1.0, None, 1, 1),
        "robustkernels": lambda x, w, a: rkF.noisy_conv2d(x, w, None, a, lam=1.0, seed=1, padding=1),
    }
    rows = []
    for channels in (16, 64):
        x = torch.randn(32, channels, 32, 32, device=DEVICE, requires_grad=True)
        weight = torch.randn(channels, channels, 3, 3, device=DEVICE, requires_grad=True)
        alpha = torch.full((1,), 0.25, device=DEVICE, requires_grad=True)
        for variant, fn in variants.items():
            total, new = _saved_for_backward(fn, x, weight, alpha)
            rows.append(
                {"case": f"b32 c{channels} 32x32", "variant": variant, "saved_bytes": total, "new_bytes": new}
            )
    return rows


def with_interleaved(medians: dict, interleaved: list[dict]) -> dict:
    """`medians` with noisy_conv2d's forward_backward medians replaced by the interleaved ones."""
    replaced = {key: by_variant for key, by_variant in medians.items() if key[0] != "noisy_conv2d"}
    for row in interleaved:
        replaced.setdefault(("noisy_conv2d", row["case"], "forward_backward"), {})[row["variant"]] = (
            row["median_ms"] / 1e3
        )
    return replaced
