"""Stage 2 — class-agnostic masks: RoI sampler (training), RoI warping, mask head, mask targets."""
