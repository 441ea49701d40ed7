"""The offline demo: synthetic data in the real data's formats and a toy CLIP trained on it.

``negation_benchmark`` writes a synthetic existence benchmark in VALSE's format (with the subjects'
true masks and the training pairs), ``decomposition_sets`` the decomposition study's image sets and
description pools, and the checks of the structure planted in them; ``toy_clip`` trains and loads
the tiny open_clip CLIP. The demo may import the core and the studies; nothing in the package imports it.
"""
