"""wsgate: the command line (component launchers, `up` supervisor, `mg` client)."""
