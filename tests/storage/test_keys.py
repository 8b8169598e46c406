"""Key validation, property-based: any text is a safe relative key or a clear refusal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ondrop.errors import InvalidKeyError
from ondrop.storage.base import check_key

PARTS = st.sampled_from(["a", "..", ".", "", "b.txt", "/", "\x00", "\n", "é", "x/y", " "])


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=40), st.lists(PARTS, max_size=6).map("/".join)))
def test_any_text_is_a_safe_key_or_a_clear_refusal(key: str) -> None:
    try:
        checked = check_key(key)
    except InvalidKeyError as exc:
        assert str(exc)
        return
    assert checked == key
    assert not key.startswith("/") and "\\" not in key
    assert all(part not in ("", ".", "..") for part in key.split("/"))
    assert all(ord(c) >= 32 and ord(c) != 127 for c in key)
    key.encode("utf-8")
