"""Availability poisons ("unlearnable examples") that need no model, as patchbench patch
generators: LSP (Yu et al., KDD 2022), AR (Sandoval-Segura et al., NeurIPS 2022) and OPS
(Wu et al., ICLR 2023)."""
