"""Suite-wide test settings."""

from __future__ import annotations

import logging

# Background threads of some tests (in-test backends, the control plane's sync loop under
# TestClient) may log after pytest has closed that test's capture stream; such a late record
# is not a test failure, so logging drops it instead of printing "--- Logging error ---".
logging.raiseExceptions = False
