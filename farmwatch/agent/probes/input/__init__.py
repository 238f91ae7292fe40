"""The input probe: its listeners (X11, evdev, pynput), the statistics they feed, X session discovery."""
