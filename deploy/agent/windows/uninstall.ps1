# Intune Win32 app uninstall command:
#   powershell.exe -ExecutionPolicy Bypass -File uninstall.ps1
# Ends and removes the input helper's sign-in task, stops and removes the service and the program folder. The agent's state
# (C:\ProgramData\farmwatch-agent) and config (C:\ProgramData\farmwatch) stay unless -Purge.
param([switch]$Purge)
$ErrorActionPreference = 'Stop'
$target = 'C:\Program Files\farmwatch'
$service = Join-Path $target 'farmwatch-agent-service.exe'
$task = 'farmwatch-agent-input-helper'
if (Get-ScheduledTask -TaskName $task -ErrorAction SilentlyContinue) {
  Stop-ScheduledTask -TaskName $task
  Unregister-ScheduledTask -TaskName $task -Confirm:$false
}
if (Test-Path $service) {
  & $service stop | Out-Null
  & $service uninstall | Out-Null
}
Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $target
if ($Purge) {
  Remove-Item -Recurse -Force -ErrorAction SilentlyContinue 'C:\ProgramData\farmwatch-agent', 'C:\ProgramData\farmwatch'
}
