"""The adapter: compiles API definitions into xDS resources for routers and enforcers."""
