"""SIEM outputs: one module per type behind :class:`~farmwatch.collector.outputs.base.Output`.

``REGISTRY`` maps the ``type`` of an ``[[outputs]]`` table to its class.

Written here rather than taken from PyPI, after looking: the syslog and Splunk packages there are
``logging`` handlers (rfc5424-logging-handler, last release 2019; splunk-handler), which report a
failed send to stderr instead of to the caller, and an outbox must know whether the receiver took
the alert; the CEF packages (cef 2012, cefevent 2023) are unmaintained; ecs-logging formats Python
log records, not documents; splunk-sdk speaks Splunk's REST API, not HEC; ocsf-lib is schema
tooling. Each format is small and cites its specification where it is built.
"""

from __future__ import annotations

from farmwatch.collector.outputs.base import Output, OutputSettings
from farmwatch.collector.outputs.ecs_file import EcsFileOutput
from farmwatch.collector.outputs.ecs_http import EcsHttpOutput
from farmwatch.collector.outputs.ocsf import OcsfOutput
from farmwatch.collector.outputs.splunk_hec import SplunkHecOutput
from farmwatch.collector.outputs.syslog import SyslogOutput
from farmwatch.collector.outputs.webhook import WebhookOutput

REGISTRY: dict[str, type[Output]] = {
    output.type_name: output
    for output in (SyslogOutput, SplunkHecOutput, EcsFileOutput, EcsHttpOutput, OcsfOutput, WebhookOutput)
}


def build(settings: OutputSettings) -> Output:
    """The output an ``[[outputs]]`` table describes (already checked by ``parse_outputs``)."""
    return REGISTRY[settings.type](settings)
