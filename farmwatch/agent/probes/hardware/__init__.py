"""The hardware probe and its sources: EDID, USB sysfs, the OS's hardware tools."""
