"""Process limits the router needs: enough file descriptors for thousands of connections."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each relayed connection holds two
    descriptors); log and return the (soft, hard) pair in force afterwards. Never raises."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the open-files limit: %s", exc)
        return (-1, -1)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-files limit raised from %d to %d", soft, target)
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
    else:
        log.info("open-files limit is %d (hard %d)", soft, hard)
    return (soft, hard)
