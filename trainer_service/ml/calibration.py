"""Temperature scaling and expected calibration error, on logits held out from training."""

from __future__ import annotations

import numpy as np

from shared.taxonomy import decide


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, numerically stable."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float,
                            allowed: np.ndarray | None = None) -> float:
    """Mean cross-entropy of `labels` under softmax(logits / temperature); with `allowed` (the
    `shared.taxonomy.admissible` matrix) a label's probability is that of all it admits."""
    probs = softmax(logits, temperature)
    if allowed is None:
        picked = probs[np.arange(len(labels)), labels]
    else:
        picked = (probs * allowed[labels]).sum(axis=1)
    return float(-np.log(np.maximum(picked, 1e-300)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, low: float = 0.05, high: float = 20.0,
                    allowed: np.ndarray | None = None) -> float:
    """The temperature in [low, high] minimising held-out NLL (golden-section on log T).

    NLL is unimodal in log T for a fixed set of logits, so the search converges to the optimum.
    Raises ValueError on empty input.
    """
    if len(labels) == 0:
        raise ValueError("no held-out examples to fit a temperature on")
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if negative_log_likelihood(logits, labels, np.exp(c), allowed) < negative_log_likelihood(
                logits, labels, np.exp(d), allowed):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2.0))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               allowed: np.ndarray | None = None,
                               *, bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| * share.

    With `allowed` (`shared.taxonomy.admissible`) a top label its true label admits is correct.
    """
    if allowed is None:
        confidence = probabilities.max(axis=1)
        correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    else:  # the answer the API gives (`shared.taxonomy.decide`) and its rolled-up probability
        top = decide(probabilities, allowed)
        confidence = (probabilities @ allowed.T)[np.arange(len(top)), top]
        correct = allowed[labels, top].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += abs(correct[mask].mean() - confidence[mask].mean()) * mask.mean()
    return float(ece)
