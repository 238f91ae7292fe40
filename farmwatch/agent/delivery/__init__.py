"""Getting reports to the collector: enrolment, identity, the state directory and spool, transport, HTTP."""
