"""Labels shared by the negation analyses, importable without torch.

``NEGATION_SIDES``: which sentence of an instance holds the negation. ``COMPONENTS``: the
image-tower components an ablation replaces, with the hook site of each.
"""

NEGATION_SIDES = ("caption", "foil")
COMPONENTS = {"mha": "attn_out", "mlp": "mlp_out"}
