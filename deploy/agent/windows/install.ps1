# Intune Win32 app install command (deploy/README.md, "Windows"):
#   powershell.exe -ExecutionPolicy Bypass -File install.ps1
# Copies the self-contained agent and the WinSW wrapper to C:\Program Files\farmwatch, writes
# agent.toml and the enrol secret to C:\ProgramData\farmwatch (readable by SYSTEM and
# Administrators only) when they come in the package, then installs and starts the service and
# registers the sign-in task that starts the per-user input helper (farmwatch-agent-input-helper.xml).
$ErrorActionPreference = 'Stop'
$target = 'C:\Program Files\farmwatch'
$config = 'C:\ProgramData\farmwatch'
$service = Join-Path $target 'farmwatch-agent-service.exe'
$task = 'farmwatch-agent-input-helper'

if (Test-Path $service) { & $service stop | Out-Null; & $service uninstall | Out-Null }
# An upgrade: end the helpers running from the old folder so it can be replaced.
if (Get-ScheduledTask -TaskName $task -ErrorAction SilentlyContinue) { Stop-ScheduledTask -TaskName $task }
New-Item -ItemType Directory -Force -Path $target, $config | Out-Null
Copy-Item -Recurse -Force (Join-Path $PSScriptRoot 'farmwatch-agent'), (Join-Path $PSScriptRoot 'farmwatch-agent-helper') $target
Copy-Item -Force (Join-Path $PSScriptRoot 'farmwatch-agent-service.exe'), (Join-Path $PSScriptRoot 'farmwatch-agent.xml') $target
foreach ($file in 'agent.toml', 'enroll-secret') {
  $source = Join-Path $PSScriptRoot $file
  if (Test-Path $source) { Copy-Item -Force $source $config }
}
# SYSTEM and Administrators only: the enrol secret must not be readable by the laptop's user.
icacls $config /inheritance:r /grant:r 'SYSTEM:(OI)(CI)F' 'Administrators:(OI)(CI)F' | Out-Null
& $service install
& $service start
# Every member of Users gets the helper at sign-in; users signed in now get it started here.
Register-ScheduledTask -TaskName $task -Xml (Get-Content -Raw (Join-Path $PSScriptRoot 'farmwatch-agent-input-helper.xml')) -Force | Out-Null
Start-ScheduledTask -TaskName $task
