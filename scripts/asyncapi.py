"""Write docs/asyncapi.json from the contracts: `python scripts/asyncapi.py`."""

import json
from pathlib import Path

from wgs_contracts.asyncapi import asyncapi_document

TARGET = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"

if __name__ == "__main__":
    TARGET.write_text(json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {TARGET}")
