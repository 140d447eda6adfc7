"""The control plane: the publisher REST API, its database, and the push to the adapter."""
