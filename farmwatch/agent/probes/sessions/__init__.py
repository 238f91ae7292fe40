"""The sessions probe: remote sessions from socket owners, and from the WTS API on Windows."""
