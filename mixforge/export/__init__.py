"""Training-ready exports of a mixture version: tokenised, globally shuffled files with lineage sidecars."""
