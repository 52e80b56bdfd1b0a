"""Self-paced decay of the discard probability p (Table IV).

Shape shorthand: scalars only; e = 0-based epoch, E = max_epoch, t = e / E clipped to [0, 1].

The paper compares no decay, linear, polynomial, exponential and cosine decay (cosine is
best) but gives no formulas; the authors' code has only a commented cosine,
p(e) = 0.5 * (1 + cos(pi * e / (3E))), which runs from 1 to 0.75 (reference §6.5). Every
schedule here starts at p(0) = 1, is non-increasing in t, and reaches ``p_end`` at t = 1:

    none:    p = 1
    linear:  p = 1 - (1 - p_end) * t
    poly:    p = 1 - (1 - p_end) * t^power          (power = 2: slow start, fast end)
    exp:     p = p_end^t                            (geometric interpolation)
    cosine:  p = 0.5 * (1 + cos(a * pi * t)),  a = arccos(2 p_end - 1) / pi
             (p_end = 0.75 gives a = 1/3, i.e. exactly the authors' formula)

With e in 0..E-1 the last epoch uses t = (E-1)/E, so p stays slightly above p_end
(authors' cosine, E = 50: p(49) = 0.759).
"""
import math

__all__ = ["decay_p", "DECAY_KINDS"]

DECAY_KINDS = ("none", "linear", "poly", "exp", "cosine")


def decay_p(kind: str, epoch: int, max_epoch: int, p_end: float = 0.75, power: float = 2.0) -> float:
    """Discard probability p for a 0-based epoch.

    Args:
        kind: one of "none", "linear", "poly", "exp", "cosine".
        epoch: 0-based epoch e >= 0; t = e / max_epoch is clipped to 1.
        max_epoch: E > 0, the epoch at which p reaches p_end.
        p_end: p at t = 1, in [0, 1].
        power: exponent of the "poly" schedule (> 0).

    Returns:
        float p in [p_end, 1].
    """
    if kind not in DECAY_KINDS:
        raise ValueError(f"decay kind must be one of {DECAY_KINDS}, got {kind!r}")
    if not 0.0 <= p_end <= 1.0:
        raise ValueError(f"p_end must be in [0, 1], got {p_end}")
    if max_epoch <= 0 or epoch < 0:
        raise ValueError(f"need epoch >= 0 and max_epoch > 0, got epoch={epoch}, max_epoch={max_epoch}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    t = min(epoch / max_epoch, 1.0)
    if kind == "none":
        return 1.0
    if kind == "linear":
        return 1.0 - (1.0 - p_end) * t
    if kind == "poly":
        return 1.0 - (1.0 - p_end) * t ** power
    if kind == "exp":
        return p_end ** t
    a = math.acos(2.0 * p_end - 1.0) / math.pi
    return 0.5 * (1.0 + math.cos(a * math.pi * t))
