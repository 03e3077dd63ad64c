"""HTTP methods a client invents cost a worker no memory that lasts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import serving

pytestmark = pytest.mark.tornado_api

INVENTED = 3000
# Every label pair the request counter can have: 7 methods and "other", by
# 5 status classes and "unknown".
LABEL_PAIRS = 8 * 6


def test_invented_methods_are_kept_as_one_kind(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    with serving.running("tests.methodsapp:app", 1, metrics_port=0, env=env) as s:
        base = serving.url(s)
        conn = serving.connect(base)
        try:
            for n in range(INVENTED):
                conn.request(f"INVENTED{n}", "/")
                response = conn.getresponse()
                response.read()
                assert response.status == 405, response.status
        finally:
            conn.close()
        status, body = serving.get(base, "/kinds")
        assert status == 200
        # Unknown methods and 4xx, GET and 2xx: not one entry per method.
        assert 1 <= body["kinds"] <= LABEL_PAIRS, body
