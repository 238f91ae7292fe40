"""Kernel interfaces two probes share: TCP sockets over inet_diag, socket owners from /proc."""
