"""Configured [layer, head] lists resolved against a model (:mod:`clip_interp.head_selection`)."""

import pytest

from clip_interp.errors import InputError
from clip_interp.head_selection import HeadOutsideModel, select_heads


def test_negative_layers_count_from_the_end_and_the_order_is_kept():
    assert select_heads([[-1, 0], [2, 3], [-3, 1]], 3, 4) == [(3, 0), (2, 3), (1, 1)]
    assert select_heads([[-1, 2]], 12, 12, layers=[11, 12]) == [(12, 2)]


@pytest.mark.parametrize("heads, layers, given, resolved", [
    ([[1, 0], [4, 0]], None, (4, 0), (4, 0)),      # no layer 4
    ([[-4, 0]], None, (-4, 0), (0, 0)),            # before the first layer
    ([[1, 4]], None, (1, 4), (1, 4)),              # no head 4
    ([[-3, 1]], [2, 3], (-3, 1), (1, 1)),          # layer 1 not among the allowed
])
def test_a_pair_outside_the_model_names_itself_as_given_and_resolved(heads, layers, given, resolved):
    with pytest.raises(HeadOutsideModel) as caught:
        select_heads(heads, 3, 4, layers=layers)
    assert isinstance(caught.value, InputError)
    assert caught.value.given == given and caught.value.resolved == resolved
