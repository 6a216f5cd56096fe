"""Measuring pretrained causal LMs (experiment 2 of the study): final-token cross-entropy and the
PCA spectrum of the hidden state that predicts it, at every context length of a measure spec.

- `protocol`: documents -> chunks -> (context, final token); per-document then chunk-weighted means
- `lm`: loading a transformers model (or a random one, no download) and the batched measurement
- `spectra`: PCA eigenvalues, intrinsic dimension per threshold, sum of log relative eigenvalues
- `export`: a GPT-2 trained by ctxscale as a transformers folder, measured like any other model

A sweep runs them through `ctxscale.experiments.measure` (one Tune trial per model).

Nothing is imported here, so `analysis` can use `spectra` (NumPy only) without torch or Ray.
"""
