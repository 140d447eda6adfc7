"""One APIRouter per resource; all publisher routes live under ``PUBLISHER_PREFIX``."""

PUBLISHER_PREFIX = "/api/am/publisher/v4"
