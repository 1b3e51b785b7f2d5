"""Stage 3 — categories: box + mask pathways, classifier / box regression, their targets."""
