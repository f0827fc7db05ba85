"""The lab file's phones: section: a population plus named phones, each a clear error when wrong."""

from __future__ import annotations

import pytest

from cluster.labfile import LabFileError
from tests.conftest import small_lab


def test_population_is_spread_over_the_unified_cm_nodes() -> None:
    spec = small_lab(
        "p", nodes=2, phones={"count": 5, "model": 8845, "named": [{"name": "SEP00AABBCCDD01", "secure": True}]}
    )
    phones = spec.phones.phones(["cucm1", "cucm2"])
    assert [p.node for p in phones[:4]] == ["cucm1", "cucm2", "cucm1", "cucm2"]
    assert phones[0].name == "SEP000000000001" and phones[0].model == "8845"
    assert phones[-1].secure and phones[-1].node == "cucm1"


@pytest.mark.parametrize(
    ("phones", "message"),
    [
        ({"count": -1}, "'count' is a number"),
        ({"count": 2, "colour": "red"}, "unknown key"),
        ({"nodes": ["imp1"]}, "Unified CM nodes"),
        ({"named": [{"name": "phone1"}]}, "SEP and 12"),
        ({"named": [{"name": "SEP000000000001"}], "count": 1}, "defined twice"),
        ({"named": [{"name": "SEP00AABBCCDD01", "auth_string": "12"}]}, "4 to 10 digits"),
        ({"secure": "yes"}, "true or false"),
    ],
)
def test_bad_phones_sections_are_refused(phones: dict[str, object], message: str) -> None:
    with pytest.raises(LabFileError, match=message):
        small_lab("p", nodes=2, phones=phones)
