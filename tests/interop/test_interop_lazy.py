"""spikeforge.interop keeps the peer libraries optional: importing spikeforge (and spikeforge.interop) loads none."""

import subprocess
import sys

PEERS = ("nir", "nirtorch", "spikingjelly", "snntorch")


def test_importing_spikeforge_imports_no_peer_library():
    code = (
        "import sys, spikeforge, spikeforge.interop as i; "
        f"print(sorted(m for m in {PEERS!r} if m in sys.modules)); "
        "print(callable(i.to_nir) and callable(i.from_nir))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True"]


def test_unknown_interop_attribute_is_an_attribute_error():
    import pytest

    import spikeforge.interop as interop

    with pytest.raises(AttributeError, match="no_such"):
        interop.no_such  # noqa: B018 (the attribute access is the test)
