"""HTTP API tests: the real server of tests/conftest.py (`real_server`; `http_url` is its HTTP base URL), the
real model and the real clients."""

from __future__ import annotations

import pytest


@pytest.fixture
def openai_client(http_url, real_api_key):
    import openai

    with openai.OpenAI(base_url=http_url + "/v1", api_key=real_api_key, timeout=300, max_retries=0) as c:
        yield c
