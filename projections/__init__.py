"""The functional core: pure, deterministic folds ``state x event -> state, outputs``.

Nothing here does I/O, reads a clock or imports Kafka/Faust.
"""
