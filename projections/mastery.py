"""Topic mastery by Bayesian Knowledge Tracing, per (learner, topic).

From each question_submit (topic_id, is_correct), in log order: the posterior given
the answer, then the chance of having learned it on this step:
    correct:   p' = p(1 - slip) / (p(1 - slip) + (1 - p) guess)
    incorrect: p' = p slip / (p slip + (1 - p)(1 - guess))
    p <- p' + (1 - p') transit
``concept_mastered`` is emitted once, when p first reaches the threshold.
"""

from __future__ import annotations

PRIOR = 0.2
TRANSIT = 0.1
GUESS = 0.2
SLIP = 0.1
MASTERY_THRESHOLD = 0.95


def bkt_update(p: float, is_correct: bool) -> float:
    if is_correct:
        posterior = p * (1 - SLIP) / (p * (1 - SLIP) + (1 - p) * GUESS)
    else:
        posterior = p * SLIP / (p * SLIP + (1 - p) * (1 - GUESS))
    return posterior + (1 - posterior) * TRANSIT
