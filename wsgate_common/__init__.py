"""Code every wsgate component shares: settings base, errors, logging, PKI, xDS client.

Kept small on purpose: components talk through proto/ and HTTP, not through this package.
"""
