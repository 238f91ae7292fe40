#!/bin/sh
# Removes the agent installed by farmwatch-agent-VERSION.pkg (run as root, e.g. a Jamf policy).
# --purge also removes its state (device identity, token, spool) and /etc/farmwatch.
set -e
launchctl bootout system/com.farmwatch.agent 2>/dev/null || true
# the input helper runs in every signed-in user's GUI session
for uid in $(ps -axo uid= -o comm= | awk '$2 ~ /loginwindow$/ {print $1}' | sort -u); do
  launchctl bootout "gui/$uid/com.farmwatch.agent.input-helper" 2>/dev/null || true
done
rm -f /Library/LaunchDaemons/com.farmwatch.agent.plist /Library/LaunchAgents/com.farmwatch.agent.input-helper.plist
rm -rf /opt/farmwatch
pkgutil --forget com.farmwatch.agent >/dev/null 2>&1 || true
if [ "${1:-}" = --purge ]; then
  rm -rf "/Library/Application Support/farmwatch-agent" /etc/farmwatch
fi
