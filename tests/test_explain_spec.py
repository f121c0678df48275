from __future__ import annotations

import pytest

from mieruka.explain.spec import parse_method_spec


def test_method_specs() -> None:
    assert parse_method_spec("gradcam") == ("gradcam", (), "mean")
    assert parse_method_spec("layercam:blocks.5+bn2") == ("layercam", ("blocks.5", "bn2"), "mean")
    assert parse_method_spec("layercam:multiscale/product") == ("layercam", ("multiscale",), "product")
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        parse_method_spec("layercam:multiscale/max")
    with pytest.raises(ValueError, match="unknown method 'gradcan'"):
        parse_method_spec("gradcan")
