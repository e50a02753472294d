"""Tools for flow authors: play scripted dialogues and recorded traffic through flows.

``dialogues`` is the dialogue file format (``confab flows test``) and its checks;
``runner`` runs conversations in this process with the turn a shard runs
(``runtime.flows.execution.turn``); ``replay`` replays recorded conversations against a
new version of a flow (``confab flows replay``).
"""
