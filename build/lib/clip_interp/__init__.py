"""Mechanistic interpretability of CLIP-like models: data, hookable models and analyses.

The package is importable without Snakemake; the workflow's rule scripts are thin
wrappers that read ``snakemake.input/params/output`` and call into it.
"""

__version__ = "0.1.0"
