"""The flow language: what a flow file may say and what it means.

A flow file is YAML (``yaml_nodes`` keeps each value's line), checked against the
language's schema (``schema``) and read into a :class:`~confab.runtime.flows.language.document.FlowDocument`
(``document``, by ``loader``), whose cross-references ``references`` checks. Conditions
and computed values are ``expressions``; what a flow says is ``templates``; what it
declares sensitive, and how that is masked, is ``masking``.

Nothing here runs a conversation: that is ``runtime.flows.execution``.
"""
