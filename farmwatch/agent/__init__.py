"""The farmwatch agent: probes on the laptop, a typed report, a spool-first transport."""
