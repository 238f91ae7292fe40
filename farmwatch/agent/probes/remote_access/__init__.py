"""The remote-access probe: running remote-control tools and their connections."""
