"""Loaded by the schemathesis run of tests/test_schemathesis_cli.py (SCHEMATHESIS_HOOKS): the PNG
uploads are the digit the schema's examples point to (`externalValue`, which schemathesis cannot
fetch from a relative URL); everything else comes from the schema alone."""

from pathlib import Path

import schemathesis
from hypothesis import strategies as st

EXAMPLE = Path(__file__).resolve().parent.parent / "app" / "service" / "static" / "example-7.png"

schemathesis.openapi.media_type("image/png", st.just(EXAMPLE.read_bytes()))
