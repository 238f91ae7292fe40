"""PyInstaller's entry script for the self-contained agent: the same ``farmwatch-agent`` console script.

freeze.sh freezes this file; it is not imported by the package.
"""

from farmwatch.entry import agent

raise SystemExit(agent())
