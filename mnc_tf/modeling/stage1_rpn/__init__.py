"""Stage 1 — class-agnostic boxes: RPN head, proposal layer, anchor labeller (training)."""
