"""Values a sender controls are echoed cut short, in mika_common's own messages too."""
import pytest

from mika_common.echo import ECHO_CHARS, echo
from mika_common.emotions import EMOTION_LABELS, reorder_to_canonical
from mika_common.node_params import ParamSpec

HUGE = 'x' * 1_000_000


def test_short_values_are_their_repr_and_long_ones_are_cut_with_their_length():
    assert echo('32FC1') == "'32FC1'"
    assert echo(['happy', 'calm']) == "['happy', 'calm']"
    assert echo(b'\x01') == repr(b'\x01')
    assert echo(HUGE) == repr('x' * ECHO_CHARS) + '... (1000000 characters)'
    assert echo(bytes(1000)).endswith('... (1000 bytes)')
    for value in (HUGE, bytes(10 ** 6), [HUGE] * 10 ** 5, {HUGE: HUGE}, ('y' * 500,) * 9,
                  set(str(i) for i in range(10 ** 5))):
        assert len(echo(value)) <= 300


def test_unknown_labels_and_parameter_values_are_echoed_cut_short():
    with pytest.raises(ValueError) as raised:
        reorder_to_canonical([HUGE] * 6 + ['happy'], [1 / 7] * 7)
    assert len(str(raised.value)) < 400 and 'happy' not in str(raised.value).split('missing')[0]
    choice = ParamSpec('detector', 'auto', 'Face detector.', choices=('auto', 'haar'))
    assert len(choice.check(HUGE)) < 400
    assert len(ParamSpec('rate', 1.0, 'Rate.').check([HUGE] * 1000)) < 400
    assert EMOTION_LABELS  # the seven labels are untouched
