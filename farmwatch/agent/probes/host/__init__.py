"""The host probe and what it reads: keyboard layouts, time zones."""
