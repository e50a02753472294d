"""Running flows: a conversation's turn and the machinery a flow file runs on.

``turn`` is a conversation's turn, the one every host runs (a shard's conversations,
the in-process runner, the benchmark's direct baseline). ``interpreter`` runs a flow
document as a :class:`~confab.runtime.flows.Flow`; it reads the user's words with
``intents`` and ``nlu`` (pluggable recognizers) and fills ``slots``. ``catalog`` loads
the flows a server runs: the bundled ones and its flow directories.
"""
