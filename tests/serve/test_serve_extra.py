"""Without the serve extra the server tests cannot run: they are left out, and this module reports it once, as a
skip that names what is missing (with the extra installed it holds no test)."""

from __future__ import annotations

import pytest

from tests.serve.conftest import MISSING

if MISSING:

    def test_the_server_tests_need_the_serve_extra() -> None:
        pytest.skip(f'the server tests need the serve extra (missing: {", ".join(MISSING)}): pip install -e ".[serve]"')
