#!/usr/bin/env bash
# Installs the OpenAPI validator tests/openapi_admin.rs drives (tests/openapi/check.py):
# openapi-core, a maintained validator of requests and responses against OpenAPI 3.0/3.1
# documents (it also validates the document itself with openapi-spec-validator).
#
# Usage: tests/openapi/install.sh   (idempotent: pip runs only when the module is missing)
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c "import openapi_core, openapi_spec_validator" 2>/dev/null; then
    exit 0
fi
echo "install.sh: pip install openapi-core"
"$PY" -m pip install --quiet "openapi-core>=0.19,<0.20"
