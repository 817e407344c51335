"""A base URL refused by the URL policy is named without what may be a credential: user info, query, fragment."""

from __future__ import annotations

import pytest

from routeplane.language_model.url_safety import URLPolicy, UnsafeURL, check_base_url


@pytest.mark.parametrize("url", [
    "http://example.com/v1?key=AIzaSECRETSECRET",  # plain http off loopback
    "https://169.254.169.254/latest?token=SECRETSECRET",  # metadata endpoint
    "https://10.0.0.7/v1?api_key=SECRETSECRET#frag",  # private network
    "ftp://example.com/?key=SECRETSECRET",  # scheme
    "https://user:SECRETSECRET@example.com/v1?x=1",  # user info
    "https://example.com:99999/v1?key=SECRETSECRET",  # malformed port
])
def test_the_refusal_names_the_url_without_its_secrets(url: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_base_url(url, URLPolicy())
    assert "SECRET" not in str(info.value)
    assert "example.com" in str(info.value) or "169.254" in str(info.value) or "10.0.0.7" in str(info.value)


def test_a_url_without_query_is_shown_whole() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_base_url("http://example.com/v1", URLPolicy())
    assert "'http://example.com/v1'" in str(info.value)
